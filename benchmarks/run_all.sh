#!/usr/bin/env bash
# Every measurement in BENCHMARKS.md, in order. Each step resumes where it stopped (compare keeps finished runs,
# train-controller resumes from its checkpoint). About 4 hours on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
P=.venv/bin/proxymix

# 1. Controllers: PPO on the proxy. v1 (GAE, 32 episodes) and the shipped default (group-relative advantages,
#    96 episodes; src/proxymix/assets/default_controller).
$P train-controller --config configs/proxy-rl.yaml --out runs/controller-proxy
$P train-controller --config configs/proxy-rl-grouped.yaml --out runs/controller-grouped

# 2. Proxy scale, held-out evaluation sequence seq1 (contains the held-out domain `reverse`; never trained on).
$P compare --config configs/quick.yaml --out runs/cmp-proxy --seeds 0 1 2 --workers 1 --methods \
  no_replay fixed:0.1 fixed:0.2 fixed:0.3 fixed:0.5 uniform loss_prop exp3 runs/controller-proxy \
  equal:runs/controller-proxy
$P compare --config configs/quick.yaml --out runs/cmp-proxy --seeds 0 --workers 1 --methods multitask
$P compare --config configs/quick.yaml --out runs/cmp-proxy-grouped --seeds 0 1 2 --workers 1 --methods \
  runs/controller-grouped equal:runs/controller-grouped
#    DoReMi's step size, chosen on a sequence of training domains (seed 1000), then evaluated on seq1.
$P compare --config configs/quick.yaml --out runs/tune-doremi --seeds 1000 --workers 1 \
  "data.sequence=[max, code, last, sort, add]" --methods doremi:0.3:1 doremi:0.3:0.3 doremi:0.3:0.1 doremi:0.3:0.03
$P compare --config configs/quick.yaml --out runs/cmp-proxy-doremi --seeds 0 1 2 --workers 1 --methods doremi:0.3:0.03
#    How chaotic is one run? Near-identical fixed ratios, one seed.
$P compare --config configs/quick.yaml --out runs/chaos --seeds 0 --workers 1 --methods \
  fixed:0.28 fixed:0.29 fixed:0.31 fixed:0.32
#    ... and with per-slot sampler streams (common random numbers across schedules).
$P compare --config configs/quick.yaml --out runs/chaos-crn --seeds 0 --workers 2 --threads 1 \
  train.sampler_streams=per_slot --methods fixed:0.28 fixed:0.29 fixed:0.30 fixed:0.31

#    v2 continued to 160 episodes (v3, not shipped), evaluated like v2.
[ -d runs/controller-grouped-160 ] || cp -r runs/controller-grouped runs/controller-grouped-160
$P train-controller --config configs/proxy-rl-grouped.yaml --out runs/controller-grouped-160 rl.updates=20
$P compare --config configs/quick.yaml --out runs/cmp-proxy-grouped --seeds 0 1 2 --workers 2 --threads 1 --methods \
  runs/controller-grouped-160 equal:runs/controller-grouped-160

# 3. Transfer to the target (21x parameters), three seeds; DoReMi-style static weights come from the proxy's
#    seed-0 doremi run. The fixed:0.3 runs are also the target's mirroring probes.
$P compare --config configs/target-quick.yaml --out runs/cmp-target --seeds 0 1 2 --workers 2 --threads 1 --methods \
  fixed:0.3 fixed:0.5 uniform exp3 runs/controller-grouped static:runs/cmp-proxy-doremi/runs/doremi-0.3-0.03-seq1-s0 \
  equal:runs/controller-grouped
$P compare --config configs/target-quick.yaml --out runs/cmp-target --seeds 0 1 2 --workers 2 --threads 1 --methods \
  no_replay loss_prop doremi:0.3:0.03
$P compare --config configs/target-quick.yaml --out runs/cmp-target --seeds 0 1 2 --workers 2 --threads 1 --methods \
  runs/controller-grouped-160 equal:runs/controller-grouped-160
#    The transferred controller with a current-task floor (and its equal budget).
$P compare --config configs/target-quick.yaml --out runs/cmp-target-floor --seeds 0 1 2 --workers 2 --threads 1 \
  controller.current_floor=0.5 --methods runs/controller-grouped equal:runs/controller-grouped

# 4. Forgetting mirroring: probes under fixed:0.3 (partial forgetting), seq1, seeds 0 and 1.
$P compare --config configs/mirror/target-neox.yaml --out runs/probe-neox --seeds 0 1 2 --workers 2 --threads 1 --methods fixed:0.3
$P compare --config configs/mirror/target-tokenizer.yaml --out runs/probe-tok --seeds 0 1 2 --workers 2 --threads 1 --methods fixed:0.3
$P compare --config configs/mirror/proxy-too-small.yaml --out runs/probe-tiny --seeds 0 1 --methods fixed:0.3
mkdir -p runs/probes
for side in proxy:cmp-proxy target:cmp-target; do
  name=${side%%:*}; src=${side##*:}
  rm -rf runs/probes/$name && mkdir -p runs/probes/$name
  cp -r runs/$src/runs/fixed-0.3-seq1-s* runs/probes/$name/
done
$P mirror-check --proxy runs/probes/proxy --target runs/probes/target --out runs/mirror-llama \
  --controller runs/controller-grouped
$P mirror-check --proxy runs/probes/proxy --target runs/probe-neox/runs --out runs/mirror-neox --controller runs/controller-grouped
$P mirror-check --proxy runs/probes/proxy --target runs/probe-tok/runs --out runs/mirror-tok --controller runs/controller-grouped
$P mirror-check --proxy runs/probe-tiny/runs --target runs/probes/target --out runs/mirror-tiny
$P mirror-check --proxy runs/probes/proxy --target runs/probes/target --items accuracy --out runs/mirror-llama-acc

# 5. Oracle Target RL: the same trainer on the target; its cost ratio to step 1 is recorded in both controllers.
#    Given the proxy controller's FLOP budget (6 target episodes), then evaluated like every other method.
$P train-controller --config configs/target-rl.yaml --out runs/oracle --oracle \
  --proxy-controller runs/controller-grouped rl.updates=3 rl.episodes_per_update=2 rl.workers=2
$P compare --config configs/target-quick.yaml --out runs/cmp-target --seeds 0 1 2 --workers 2 --threads 1 --methods \
  runs/oracle equal:runs/oracle

# 6. Mirroring breaks (2): a probe that forgets everything (no replay): every accuracy drop is 100, all tasks tie.
for side in proxy:cmp-proxy target:cmp-target; do
  name=${side%%:*}; src=${side##*:}
  rm -rf runs/probes/$name-nr && mkdir -p runs/probes/$name-nr
  cp -r runs/$src/runs/no_replay-seq1-s* runs/probes/$name-nr/
done
$P mirror-check --proxy runs/probes/proxy-nr --target runs/probes/target-nr --items accuracy --out runs/mirror-noreplay
