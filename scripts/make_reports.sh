#!/usr/bin/env bash
# Regenerate reports/ for the shipped checkpoint: the demo preset (the data it was trained on) and the
# realistic preset (same diffusion model and evaluation classifier; EEG models trained on realistic data:
# configs/tiny-realistic.json). CPU times on 2 cores: see each report's wall time.
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

# The realistic pipeline: the shipped VAE, UNet and classifier with EEG models trained on realistic data
if [ ! -f runs/tiny-realistic/pipeline/model_index.json ]; then
  for s in encoder semantic saliency layout; do
    [ -f runs/tiny-realistic/$s/metrics.json ] || python -m neuroimagen.train $s --config configs/tiny-realistic.json
  done
  mkdir -p runs/tiny-realistic
  for s in vae unet classifier; do
    if [ ! -e runs/tiny-realistic/$s ]; then
      if [ -d runs/tiny/$s ]; then ln -s "$PWD/runs/tiny/$s" runs/tiny-realistic/$s
      else  # from the shipped checkpoint
        src=$CKPT/$s; [ $s = classifier ] && src=$CKPT/eval_classifier
        mkdir -p runs/tiny-realistic/$s && cp -r $src/. runs/tiny-realistic/$s/
      fi
    fi
  done
  python -m neuroimagen.train assemble --config configs/tiny-realistic.json
fi

for preset in demo realistic; do
  ckpt=$CKPT; [ $preset = realistic ] && ckpt=runs/tiny-realistic/pipeline
  common=(--checkpoint $ckpt --data data/sim_$preset.pth --splits data/sim_${preset}_splits.pth
          --stimuli data/stimuli --out reports/$preset --preset $preset)
  python -m neuroimagen.evaluate "${common[@]}" --parts baselines
  python -m neuroimagen.evaluate "${common[@]}" --parts reconstruction --limit "$LIMIT"
done
python -m neuroimagen.evaluate --index reports/demo reports/realistic reports/block_design --out reports
