"""NeuroImagen app: ``python app.py [--checkpoint DIR] [--sd-model ID_OR_PATH] [--port N] [--share]``.

``--checkpoint`` and ``--sd-model`` may come from ``$NEUROIMAGEN_CHECKPOINT`` and ``$NEUROIMAGEN_SD_MODEL`` instead
(a flag wins; how a Space passes them: docs/DEPLOY.md). Loads the pipeline once (CUDA when available, its
diffusion stage in float16 there), builds the UI (``demo.build_demo``) and serves it on http://127.0.0.1:7860
(loopback unless ``--share`` or ``GRADIO_SERVER_NAME`` say otherwise).
"""

from demo.startup import load_pipeline, parse_args

if __name__ == "__main__":
    args = parse_args()
    pipe = load_pipeline(args.checkpoint, sd_model=args.sd_model)

    from demo import LAUNCH_KWARGS, build_demo
    from demo.settings import CONCURRENCY, QUEUE_MAX_SIZE

    demo = build_demo(pipe, examples_dir=args.examples)
    demo.queue(max_size=QUEUE_MAX_SIZE, default_concurrency_limit=CONCURRENCY)  # the reconstruction itself: 1
    demo.launch(server_port=args.port, share=args.share, **LAUNCH_KWARGS)
