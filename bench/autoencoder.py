"""Does a real, non-linear autoencoder cluster texts better than the clusterer's linear one? (issue 19)

The clusterer's "autoencoder" (training/clusterer.py) is linear and starts at its closed-form optimum,
LSA. This bench puts it beside the DEC paper's own recipe (Xie, Girshick & Farhadi 2016, section 4.1
and 4.3): a stacked autoencoder d-500-500-2000-10 with ReLU, over the TF-IDF of the 2,000 most
frequent words (their REUTERS setting), pre-trained as a denoising autoencoder (20 % dropout on the
input and on every layer), then k-means, then DEC (Student-t kernel with one degree of freedom, target
P = Q²/f, KL(P‖Q) trains the encoder and the centroids). Because the paper pre-trains greedily layer by
layer for 50,000 steps per layer and then 100,000 end to end, far beyond a training job's budget on two
cores, the pre-training here is end to end for `--epochs` (as the authors' later Keras code does).

On the same texts and the same folds (all of each dataset's texts, train and test, no labels; NMI
against the labels), one run per dataset:
  - LSA(50) + k-means over the clusterer's own TF-IDF (its start), the linear autoencoder's embedding
    + k-means, and + DEC: `training.clusterer.fit`'s stages, i.e. what `textstream train` serves;
  - LSA(10) + k-means over the same 2,000-word TF-IDF the stacked autoencoder sees (a linear model of
    the same input and size);
  - the stacked autoencoder + k-means, and + DEC.

    .venv/bin/python bench/autoencoder.py                        # bbc_news sms_spam ag_news 20newsgroups
    .venv/bin/python bench/autoencoder.py --only bbc_news --epochs 20   # a quick look

Writes bench/results/autoencoder.json and autoencoder.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from quality import RESULTS, SPECS, default_datasets, machine, split

logger = logging.getLogger("bench.autoencoder")
DEFAULT = ["bbc_news", "sms_spam", "ag_news", "20newsgroups"]


def _nmi(y: list[str], part: np.ndarray) -> float:
    from sklearn.metrics import normalized_mutual_info_score

    return round(float(normalized_mutual_info_score(y, part)), 4)


def _kmeans(z: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.cluster import KMeans

    km = KMeans(k, n_init=20, random_state=seed).fit(z)
    return km.labels_, km.cluster_centers_


def stacked(x: Any, k: int, epochs: int, dec_iterations: int, seed: int) -> dict[str, Any]:
    """The DEC paper's autoencoder and DEC on the dense rows `x`; returns both partitions."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    sizes = [500, 500, 2000, 10]
    inp = keras.Input((x.shape[1],))
    h = keras.layers.Dropout(0.2)(inp)
    for i, n in enumerate(sizes):
        h = keras.layers.Dense(n, activation=None if i == len(sizes) - 1 else "relu", name=f"enc{i}")(h)
        if i < len(sizes) - 1:
            h = keras.layers.Dropout(0.2)(h)
    encoder_out = h
    for n in reversed(sizes[:-1]):
        h = keras.layers.Dense(n, activation="relu")(h)
    out = keras.layers.Dense(x.shape[1])(h)
    autoencoder = keras.Model(inp, out)
    autoencoder.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    started = time.perf_counter()
    fitted = autoencoder.fit(x, x, batch_size=256, epochs=epochs, verbose=0, shuffle=True)
    pretrain_s = time.perf_counter() - started
    encoder = keras.Model(inp, encoder_out)
    z = encoder.predict(x, batch_size=1024, verbose=0)
    kmeans, centers = _kmeans(z, k, seed)

    # DEC, as in the paper: q_ij ∝ (1 + |z_i - μ_j|²)^-1, p_ij ∝ q_ij² / f_j, target refreshed once per pass.
    mu = tf.Variable(centers.astype(np.float32))
    opt = keras.optimizers.SGD(0.01, momentum=0.9)
    variables = [*encoder.trainable_variables, mu]

    def soft(zb: Any) -> Any:
        q = 1.0 / (1.0 + tf.reduce_sum(tf.square(zb[:, None, :] - mu[None, :, :]), axis=2))
        return q / tf.reduce_sum(q, axis=1, keepdims=True)

    @tf.function  # type: ignore[untyped-decorator]
    def step(xb: Any, pb: Any) -> Any:
        with tf.GradientTape() as tape:
            q = soft(encoder(xb, training=False))
            loss = tf.reduce_mean(tf.reduce_sum(pb * tf.math.log((pb + 1e-10) / (q + 1e-10)), axis=1))
        opt.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        return loss

    rng = np.random.default_rng(seed)
    assigned = kmeans
    for it in range(dec_iterations):
        q = soft(tf.constant(encoder.predict(x, batch_size=1024, verbose=0))).numpy()
        now = q.argmax(axis=1)
        if it and np.mean(now != assigned) < 0.001:  # the paper's tolerance
            break
        assigned = now
        p = q**2 / q.sum(axis=0)
        p /= p.sum(axis=1, keepdims=True)
        order = rng.permutation(len(x))
        for s in range(0, len(order), 256):
            rows = order[s:s + 256]
            step(tf.constant(x[rows]), tf.constant(p[rows], dtype=tf.float32))
    q = soft(tf.constant(encoder.predict(x, batch_size=1024, verbose=0))).numpy()
    return {"kmeans": kmeans, "dec": q.argmax(axis=1), "pretrain_s": pretrain_s,
            "reconstruction_mse": float(fitted.history["loss"][-1])}


def run_one(name: str, folder: Path, epochs: int, dec_iterations: int, seed: int) -> dict[str, Any]:
    from sklearn.decomposition import TruncatedSVD
    from sklearn.preprocessing import normalize

    from training import clusterer
    from training.config import ClustererConfig

    spec = next(s for s in SPECS if s.name == name)
    tr_x, tr_y, te_x, te_y = split(spec, folder, None)
    texts, y = tr_x + te_x, tr_y + te_y
    k = len(set(y))
    cfg = ClustererConfig()
    logger.info("%s: %d texts, k=%d", name, len(texts), k)

    started = time.perf_counter()
    ours = clusterer.fit(texts, k, cfg, seed)
    ours_s = time.perf_counter() - started
    row: dict[str, Any] = {"dataset": name, "texts": len(texts), "k": k, "ours_s": round(ours_s, 1)}
    row.update({f"ours_{stage}": _nmi(y, part) for stage, part in ours.stages.items()})

    # The 2,000 most frequent words' TF-IDF (the paper's input), from the clusterer's own tokeniser.
    small = clusterer.representation(texts, cfg.model_copy(update={"vocab_size": 2000})).x
    dense = normalize(small).toarray().astype(np.float32)
    lsa10 = normalize(TruncatedSVD(10, random_state=seed).fit_transform(small))
    row["lsa10_2000_kmeans"] = _nmi(y, _kmeans(lsa10, k, seed)[0])
    deep = stacked(dense, k, epochs, dec_iterations, seed)
    row.update({"stacked_kmeans": _nmi(y, deep["kmeans"]), "stacked_dec": _nmi(y, deep["dec"]),
                "stacked_pretrain_s": round(deep["pretrain_s"], 1), "epochs": epochs,
                "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())})
    logger.info("%s: %s", name, row)
    return row


def markdown(rows: dict[str, dict[str, Any]], env: dict[str, str]) -> str:
    lines = []
    for r in rows.values():
        lines.append(f"| {r['dataset']} | {r['texts']:,} | {r['k']} | {r['ours_lsa_kmeans']:.4f} | "
                     f"{r['ours_autoencoder_kmeans']:.4f} | **{r['ours_dec']:.4f}** | {r['lsa10_2000_kmeans']:.4f} | "
                     f"{r['stacked_kmeans']:.4f} | {r['stacked_dec']:.4f} | {r['ours_s']:.0f} | "
                     f"{r['stacked_pretrain_s']:.0f} ({r['epochs']} epochs) | {r['finished']} |")
    better = [r["dataset"] for r in rows.values() if max(r["stacked_kmeans"], r["stacked_dec"]) > r["ours_dec"]]
    machine_line = ", ".join(f"{k} {v}" for k, v in env.items())
    return f"""# Linear vs stacked autoencoder for the clusterer (issue 19)

Produced by `bench/autoencoder.py` (the protocol is in its docstring). NMI against the labels over all of
each dataset's texts (no labels used to fit), one run per dataset, seed 42. Machine: {machine_line}.

| dataset | texts | k | LSA(50) + k-means | linear AE + k-means | **+ DEC (served)** | LSA(10) of 2,000 words + k-means | stacked AE + k-means | stacked AE + DEC | ours s | stacked AE pre-training s | finished |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|
{chr(10).join(lines)}

The stacked autoencoder beat what `textstream train` serves on {len(better)} of {len(rows)} datasets
({', '.join(better) or 'none'}).
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", type=Path, default=default_datasets(),
                        help="folder with the *.jsonl.gz files (default: TEXTSTREAM_DATASETS or ../shared/datasets)")
    parser.add_argument("--only", nargs="+", choices=[s.name for s in SPECS], default=DEFAULT,
                        help=f"datasets (default: {' '.join(DEFAULT)})")
    parser.add_argument("--epochs", type=int, default=100, help="stacked autoencoder pre-training epochs (default 100)")
    parser.add_argument("--dec-iterations", type=int, default=20, help="DEC target updates (default 20)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--results", type=Path, default=RESULTS, help="where autoencoder.json and .md go")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if not args.datasets.is_dir():
        parser.error(f"no dataset folder at {args.datasets}; pass --datasets or set TEXTSTREAM_DATASETS")
    store = args.results / "autoencoder.json"
    saved: dict[str, Any] = json.loads(store.read_text()) if store.is_file() else {}
    rows: dict[str, dict[str, Any]] = saved.get("results", {})
    env = machine()
    for name in args.only:
        rows[name] = run_one(name, args.datasets, args.epochs, args.dec_iterations, args.seed)
        r = rows[name]
        print(f"{name:<14} served (linear AE + DEC) {r['ours_dec']:.4f}  stacked AE + k-means {r['stacked_kmeans']:.4f}"
              f"  + DEC {r['stacked_dec']:.4f}", flush=True)
        args.results.mkdir(parents=True, exist_ok=True)
        store.write_text(json.dumps({"machine": env, "results": rows}, indent=2))
        (args.results / "autoencoder.md").write_text(markdown(rows, env), encoding="utf-8")
    print(f"wrote {args.results / 'autoencoder.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
