#!/usr/bin/env bash
# Regenerate every measured file the README and the model card quote, for the shipped checkpoint:
#   reports/demo          the demo preset (the data it was trained on)
#   reports/realistic     the realistic preset (the shipped VAE, UNet and classifier; EEG models and layout prior
#                         trained on realistic data: configs/tiny-realistic.json, runs/tiny-realistic/pipeline)
#   reports/decoders/realistic  the class decoders on realistic data beside the baselines (the realistic EEG stages
#                         with the class decoder, put into a copy of the shipped checkpoint)
#   reports/block_design  LDA with and without simulated block drift (no model weights)
#   reports/caps/demo     the class decoded from trials simulated on other caps (scripts/cap_accuracy.py)
#   reports/bench         python -m neuroimagen.bench with 1 and 2 threads
#   docs/figures/reconstructions.png (+ .json)   one held-out demo trial per class
# then the index reports/README.md and the model card (which quotes only files measured on its weights).
# CPU times on 2 cores: each report gives its wall time; the two reconstruction parts take most of it.
#
#   bash scripts/make_reports.sh            # everything, data included
#   LIMIT=40 bash scripts/make_reports.sh   # fewer reconstructed trials
set -euo pipefail
cd "$(dirname "$0")/.."
LIMIT=${LIMIT:-80}
CKPT=checkpoints/neuroimagen-tiny

# Data (not committed; deterministic from the seeds)
[ -d data/stimuli ] || python -m neuroimagen.data stimuli --out data/stimuli
[ -f data/sim_demo.pth ] || python -m neuroimagen.data simulate --stimuli data/stimuli --out data/sim_demo.pth --preset demo
[ -f data/sim_realistic.pth ] || python -m neuroimagen.data simulate --stimuli data/stimuli --out data/sim_realistic.pth --preset realistic
[ -f data/sim_realistic_drift.pth ] || python -m neuroimagen.data simulate --stimuli data/stimuli \
  --out data/sim_realistic_drift.pth --preset realistic --block-drift

# The realistic pipeline: the shipped VAE, UNet and classifier with EEG models trained on realistic data
if [ ! -f runs/tiny-realistic/pipeline/model_index.json ]; then
  for s in encoder semantic class_decoder saliency layout; do
    [ -f runs/tiny-realistic/$s/metrics.json ] || python -m neuroimagen.train $s --config configs/tiny-realistic.json
  done
  mkdir -p runs/tiny-realistic
  for s in vae unet classifier; do
    if [ ! -e runs/tiny-realistic/$s ]; then  # from the shipped checkpoint (runs/tiny/vae and unet are not what it
      src=$CKPT/$s; [ $s = classifier ] && src=$CKPT/eval_classifier  # ships: its finetune rounds came after them)
      mkdir -p runs/tiny-realistic/$s && cp -r $src/. runs/tiny-realistic/$s/
    fi
  done
  python -m neuroimagen.train assemble --config configs/tiny-realistic.json
fi

# Each report's parts are measured on the same weights (the reports record their digests and keep an earlier
# part only when they match).
for preset in demo realistic; do
  ckpt=$CKPT; [ $preset = realistic ] && ckpt=runs/tiny-realistic/pipeline
  common=(--checkpoint $ckpt --data data/sim_$preset.pth --splits data/sim_${preset}_splits.pth
          --stimuli data/stimuli --out reports/$preset --preset $preset)
  python -m neuroimagen.evaluate "${common[@]}" --parts baselines
  python -m neuroimagen.evaluate "${common[@]}" --parts reconstruction --limit "$LIMIT"
done
# The realistic class decoders beside the baselines (only the EEG stages matter here)
python scripts/swap_eeg_stages.py --run runs/tiny-realistic --stages encoder,semantic,class_decoder \
  --out runs/tiny-realistic/decoders
python -m neuroimagen.evaluate --checkpoint runs/tiny-realistic/decoders --data data/sim_realistic.pth \
  --splits data/sim_realistic_splits.pth --stimuli data/stimuli --out reports/decoders/realistic --preset realistic \
  --parts baselines
python -m neuroimagen.evaluate --data data/sim_realistic.pth --splits data/sim_realistic_splits.pth \
  --drift-data data/sim_realistic_drift.pth --drift-splits data/sim_realistic_drift_splits.pth --parts block \
  --preset realistic-block-design --out reports/block_design
python -m neuroimagen.evaluate --index reports/demo reports/realistic reports/decoders/realistic reports/block_design \
  --out reports

# Decoding from other caps (trials simulated on each cap, read as uploads; the app's expected accuracy)
python scripts/cap_accuracy.py --checkpoint $CKPT --per-class 3 --subjects 1-10 --out reports/caps/demo

# Speed (other work on the machine slows it: the files record the load average) and the grid of the README
python -m neuroimagen.bench --threads 1 --repeats 5 --out reports/bench/threads1.json
python -m neuroimagen.bench --threads 2 --repeats 5 --out reports/bench/threads2.json
python scripts/reconstruct_grid.py --per-class 1 --out docs/figures/reconstructions.png

# The card quotes the reports and benchmark results measured on its weights
python -m neuroimagen.training.assemble --config configs/tiny.json
