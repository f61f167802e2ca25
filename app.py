"""NeuroImagen app: ``python app.py [--checkpoint DIR] [--sd-model ID_OR_PATH] [--port N] [--share]``.

Loads the pipeline once (CUDA when available), builds the UI (``demo.build_demo``) and serves it on
http://127.0.0.1:7860 (loopback unless ``--share`` or ``GRADIO_SERVER_NAME`` say otherwise).
"""

import argparse
from pathlib import Path

import torch

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "neuroimagen-tiny"

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT), help="NeuroImagen folder (default: %(default)s)")
    p.add_argument("--sd-model", default=None, help="Stable Diffusion hub id or folder for the last stage (GPU)")
    p.add_argument("--port", type=int, default=None, help="port (default: 7860 or $GRADIO_SERVER_PORT)")
    p.add_argument("--share", action="store_true", help="also serve through a public gradio.live link")
    p.add_argument("--examples", default=None, help="folder of example trials (default: examples/)")
    args = p.parse_args()
    if not Path(args.checkpoint).is_dir():
        p.error(f"no checkpoint folder at {args.checkpoint}: pass --checkpoint DIR, or build the default with "
                f"'python -m neuroimagen.train all --config configs/tiny.json'")

    from demo import LAUNCH_KWARGS, build_demo
    from demo.settings import CONCURRENCY, QUEUE_MAX_SIZE
    from neuroimagen import NeuroImagenPipeline

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = {"torch_dtype": torch.float16} if device == "cuda" and args.sd_model else {}
    pipe = NeuroImagenPipeline.from_pretrained(args.checkpoint, sd_model=args.sd_model, **dtype).to(device)
    demo = build_demo(pipe, examples_dir=args.examples)
    demo.queue(max_size=QUEUE_MAX_SIZE, default_concurrency_limit=CONCURRENCY)  # the reconstruction itself: 1
    demo.launch(server_port=args.port, share=args.share, **LAUNCH_KWARGS)
