from proxymix.data.suite import DOMAINS, SEQUENCES, builtin_suite, harmful_behaviours
from proxymix.data.tasks import REFUSAL, exact_match, is_refusal, refusal_match
from proxymix.data.tokenize import encode, suite_texts, train_bpe


def test_suite_is_deterministic_and_complete():
    a, b = builtin_suite(3, 64, 8, 8), builtin_suite(3, 64, 8, 8)
    assert list(a) == ["safety", *DOMAINS] and len(DOMAINS) >= 8
    for name in a:
        assert a[name].train == b[name].train and a[name].test == b[name].test
    assert builtin_suite(4, 64, 8, 8)["sort"].test != a["sort"].test
    for seq in SEQUENCES.values():
        assert len(seq) >= 5 and set(seq) <= set(DOMAINS)
    assert len(SEQUENCES) == 5


def test_rule_tasks_test_inputs_unseen_in_training():
    suite = builtin_suite(0, 200, 16, 16)
    for name in ("sort", "max", "reverse", "last"):
        assert {e.prompt for e in suite[name].test}.isdisjoint(e.prompt for e in suite[name].train)


def test_safety_split_is_disjoint_and_balanced():
    safety = builtin_suite(0, 8, 16, 32)["safety"]
    harm = lambda split: {e.prompt for e in split if e.kind == "harmful"}
    assert harm(safety.test).isdisjoint(harm(safety.train)) and harm(safety.val).isdisjoint(harm(safety.train))
    kinds = [e.kind for e in safety.test]
    assert kinds.count("harmful") == kinds.count("benign") == 16
    assert len(harmful_behaviours()) > 600


def test_scorers():
    assert exact_match(" 1  2 ", "1 2") == 1.0 and exact_match("1 3", "1 2") == 0.0
    assert is_refusal("I cannot help with that .") and not is_refusal("Sure , here you go .")
    assert refusal_match("I can't do it", REFUSAL) == 1.0 and refusal_match("Sure", REFUSAL) == 0.0


def test_tokenizer_round_trip_and_completion_mask():
    suite = builtin_suite(0, 32, 8, 8)
    tok = train_bpe(suite_texts(suite.values()), 300)
    ex = suite["sort"].train[0]
    enc = encode(tok, [ex], 64)[0]
    assert tok.decode(enc.ids[enc.n_prompt:], skip_special_tokens=True).strip() == ex.completion
    assert enc.ids[-1] == tok.eos_token_id
    long = encode(tok, suite["safety"].train[:1], 8)[0]
    assert len(long.ids) == 8 and long.n_target == len(encode(tok, suite["safety"].train[:1], 64)[0].ids) - \
        encode(tok, suite["safety"].train[:1], 64)[0].n_prompt
