"""Caption (or OCR, detect, ...) a large image collection with Ray Data, one PaliGemma per worker.

    pip install 'paligemma-desktop[scale]'
    python examples/ray_batch.py --model google/paligemma2-3b-mix-224 --inputs /data/photos --prompt "caption en" \
        --out /data/captions --workers 4 --gpus-per-worker 1 --batch-size 16

On a cluster, start Ray there (`ray start --head` / `ray start --address ...`) and pass --address auto; without it
the script starts a local Ray instance with --num-cpus CPUs. --inputs takes what `python -m vlm_core batch` takes (a
folder, a glob, a .txt list); every worker must see the same paths (a shared or network file system). The output
folder gets JSONL files (or Parquet with --format parquet), one per block, in the CLI's row format (file names that
are not UTF-8 included: `path_b64` holds their bytes).

--prompts FILE gives each image its own prompt, from the CLI's manifest (CSV image,prompt or JSON Lines; see
vlm_core/runtime/manifest.py): with it --inputs and --prompt are optional, and each Ray batch mixes prompts.

--read-images decodes in Ray CPU tasks ahead of the model workers instead of in them. Those tasks need CPU the
workers do not hold, so with it the workers' CPUs are lowered (fractional Ray resources) to leave READ_CPUS free
whenever the workers would otherwise take every CPU: the job never waits for a CPU that no one gives back. A file
that cannot be decoded (damaged, empty, a decompression bomb) gets an error row in either mode.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from vlm_core.errors import VlmError  # noqa: E402
from vlm_core.runtime.manifest import batch_jobs  # noqa: E402
from vlm_core.scale.ray_predictor import PaliGemmaPredictor, decode_images  # noqa: E402

READ_CPUS = 0.5  # what one decoding task asks for; kept free of the model workers with --read-images


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--inputs", help="a folder, a quoted glob or a .txt list of image paths")
    p.add_argument("--prompt", help="every image's prompt, or with --prompts the one for images without their own")
    p.add_argument("--prompts", metavar="FILE", help="per-image prompts: a CSV (image,prompt) or JSONL manifest, "
                                                     "as `python -m vlm_core batch --prompts` takes")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--format", choices=["jsonl", "parquet"], default="jsonl")
    p.add_argument("--read-images", action="store_true",
                   help="decode in Ray CPU tasks ahead of the model workers instead of in them")
    p.add_argument("--workers", type=int, default=2, help="model replicas (Ray actors)")
    p.add_argument("--gpus-per-worker", type=float, default=0)
    p.add_argument("--cpus-per-worker", type=float, default=1)
    p.add_argument("--batch-size", type=int, default=8, help="images per Ray batch, and per device batch")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--address", default=None, help="an existing Ray cluster (e.g. auto); default: start one here")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs for a local Ray instance")
    args = p.parse_args(argv)
    if args.prompt is None and args.prompts is None:
        p.error("give --prompt, or --prompts FILE with a prompt per image")
    if args.inputs is None and args.prompts is None:
        p.error("give --inputs, or --prompts FILE")
    try:
        jobs, _ = batch_jobs(args.inputs, args.prompts, args.prompt)
    except VlmError as e:
        sys.exit(f"error: {e}")

    import ray

    ray.init(address=args.address, num_cpus=None if args.address else args.num_cpus,
             include_dashboard=False, log_to_driver=False)
    # Bytes: Arrow strings must be UTF-8, file names need not be (the rows carry path_b64 for those).
    ds = ray.data.from_items([{"path": os.fsencode(path), "prompt": prompt} for path, prompt in jobs])
    worker_cpus = args.cpus_per_worker
    if args.read_images:
        worker_cpus = _leave_room_for_reading(ray.cluster_resources().get("CPU", 0), args.workers, worker_cpus)
        ds = ds.map_batches(decode_images, batch_size=args.batch_size, num_cpus=READ_CPUS)
    rows = ds.map_batches(
        PaliGemmaPredictor,
        fn_constructor_kwargs={"model": args.model, "prompt": args.prompt, "max_new_tokens": args.max_new_tokens,
                               "device": args.device, "dtype": args.dtype,
                               "prompts": sorted({prompt for _, prompt in jobs})},
        batch_size=args.batch_size, concurrency=args.workers, num_gpus=args.gpus_per_worker,
        num_cpus=worker_cpus)
    if args.format == "parquet":
        rows.write_parquet(args.out)
    else:
        rows.write_json(args.out)
    print(f"{len(jobs)} images -> {args.out} ({args.format})")
    ray.shutdown()
    return 0


def _leave_room_for_reading(cpus: float, workers: int, per_worker: float) -> float:
    """CPUs per model worker such that READ_CPUS stay free for the decoding tasks."""
    if workers * per_worker + READ_CPUS <= cpus:
        return per_worker
    fitted = round((cpus - READ_CPUS) / workers, 3)
    if fitted <= 0:
        sys.exit(f"error: --read-images needs more than {READ_CPUS} CPU beside {workers} workers; "
                 f"this Ray cluster has {cpus:g} CPUs")
    print(f"--read-images: {fitted:g} CPU per worker instead of {per_worker:g}, so {READ_CPUS:g} CPU stays free "
          "for decoding", file=sys.stderr)
    return fitted


if __name__ == "__main__":
    sys.exit(main())
