"""Which hidden state makes the best kNN-LM key? held-out NLL gain of knn for several key choices (exact search)."""
import sys, time, math, torch, numpy as np, faiss
from pathlib import Path
from s3cmn.modeling.loading import load_model
from s3cmn.evaluation.run import load_eval_tokenizer
from s3cmn.evaluation.perplexity import prepare_text
from s3cmn.run_config import DataConfig
from s3cmn.data.windows import sliding_windows, window_batches
from s3cmn.ops.nll import nll_float64
from s3cmn.memory.nexttoken.readout import Neighbours
from s3cmn.memory.nexttoken.fit import target_prob, best_lambda, restrict, TEMPERATURE_FACTORS
torch.set_num_threads(1); faiss.omp_set_num_threads(1)
ck = Path(sys.argv[1]); ctx = int(sys.argv[2])
m = load_model(ck); tok, _ = load_eval_tokenizer(ck, DataConfig())
def states(path):
    t = prepare_text(Path(path).read_text(), tok, 0, None, m.config.vocab_size).stream
    keys = {"final": [], "prenorm": [], "mid": []}; tg = []; lm = []
    L = m.config.num_layers
    with torch.no_grad():
        for batch in window_batches(sliding_windows(t.numel(), ctx, ctx // 2), 8):
            ids = torch.stack([t[w.begin:w.end] for w in batch]); B, T = ids.shape; n = batch[0].num_scored
            out = m.model(ids, use_cache=False, memory_bank=None, output_hidden_states=True)
            hs = out["hidden_states"]
            sl = lambda x: x[:, T - n - 1:T - 1].reshape(B * n, -1).float()
            h = sl(out["hidden"]); keys["final"].append(h); keys["prenorm"].append(sl(hs[-2])); keys["mid"].append(sl(hs[L // 2 + 1]))
            y = ids[:, T - n:].reshape(-1); tg.append(y); lm.append(-nll_float64(m.lm_head(h), y))
    return {k: torch.cat(v).numpy() for k, v in keys.items()}, torch.cat(tg), torch.cat(lm)
t0 = time.time()
tr, trv, _ = states("/work/honest/train.raw"); ho, hov, holm = states("/work/honest/heldout.raw")
print("states", time.time() - t0, "s", tr["final"].shape, ho["final"].shape, "off NLL", float(-holm.mean()), flush=True)
vals = trv.numpy()
for name in ("final", "prenorm", "mid", "final-cos", "prenorm-cos"):
    base = name.split("-")[0]; a = np.ascontiguousarray(tr[base]); q = np.ascontiguousarray(ho[base])
    if name.endswith("cos"):
        a = a / np.linalg.norm(a, axis=1, keepdims=True); q = q / np.linalg.norm(q, axis=1, keepdims=True)
    idx = faiss.IndexFlatL2(a.shape[1]); idx.add(a); D, I = idx.search(q, 256)
    nb = Neighbours(torch.from_numpy(D), torch.from_numpy(vals[I]))
    best = None
    for k in (16, 64, 256):
        r = restrict(nb, torch.zeros(len(q), dtype=torch.long), None, k)
        med = float(r.distances[:, 0].median())
        for f in TEMPERATURE_FACTORS:
            lam, ll = best_lambda(holm, *target_prob(r, hov, max(med, 1e-6) * f))
            if best is None or ll > best[0]: best = (ll, k, f, lam)
    print(f"{name}: knn NLL {-best[0]:.4f} (gain {-best[0] - float(-holm.mean()):+.4f}) k {best[1]} Tf {best[2]:.3f} lam {best[3]}", flush=True)
