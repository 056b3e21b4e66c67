#!/usr/bin/python3
"""PyTorch reference for the speed benchmark: the same SASRec (CoSeRec/BASRec
style, ../shared/PROTOCOL.md) and the same training step as the C code,
written the ordinary PyTorch way (padded [B, 50] tensors, autograd, Adam), as
the authors' implementation does. It only measures time; it does not train to
convergence.

    /usr/bin/python3 bench/torch_ref.py --data ../shared/data/Beauty.txt \
        --mode {stage1,stage2,eval} [--batches 10] [--threads 2] [--stack]

stage1: plain SASRec + BCE batches. stage2: BASRec batches: the plain pass,
2*n_pairs augmented copies, each run through the encoder separately as the
reference does (--stack: plain pass and copies as one [5B, 50] batch), and
2*n_whole_level cross-sequence mixups. The N timed batches follow 2 warm-up
batches. A batch's time covers what the reference pays in its
DataLoader (num_workers=0) as well: negative sampling, augmentation and
padding in Python, then forward, backward and the Adam step. The ItemCF-IUF
table for Substitute is computed before timing starts. eval: one full-ranking
pass over all users (valid split by default), batch 256, scores
h_last . E^T over all item rows with the items seen in the input masked.
Prints one JSON object on stdout.
"""
import argparse
import json
import math
import os
import random
import resource
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# The reference's LayerNorm (eps inside the sqrt, 1e-12) and erf GELU, as
# the parity fixtures use them.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures"))
from fixture_common import LayerNorm, gelu  # noqa: E402

MAX_LEN = 50
HIDDEN = 64
N_LAYERS = 2
N_HEADS = 2
DROPOUT = 0.1
BATCH = 256
LR = 1e-3
# BASRec, Beauty (PROTOCOL.md "BASRec (stage 2)")
BETA = 0.4
RATE_MIN, RATE_MAX = 0.2, 0.71
N_PAIRS = 2
N_WHOLE_LEVEL = 3


# ---------------------------------------------------------------- data


def load_sequences(path):
    seqs = []
    with open(path) as f:
        for ln, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            try:
                ids = [int(x) for x in parts]
            except ValueError:
                sys.exit(f"{path}:{ln}: not a list of integers")
            if len(ids) < 2 or min(ids[1:]) < 1:
                sys.exit(f"{path}:{ln}: expected 'user item item ...' with item ids >= 1")
            seqs.append(ids[1:])
    if not seqs:
        sys.exit(f"{path}: no sequences")
    return seqs


def pad_left(items):
    items = items[-MAX_LEN:]
    return [0] * (MAX_LEN - len(items)) + items


def itemcf_iuf_best(seqs, n_items):
    """Most similar item per item under ItemCF-IUF on the training parts
    s[0:n-3] (distinct items per user, as the reference's dict does):
    C_ij = sum_u 1/log(1+|I_u|), sim = C_ij / sqrt(N_i N_j). -1 = no neighbour."""
    rows, cols, vals = [], [], []
    n_cnt = np.zeros(n_items + 1, dtype=np.float64)
    for s in seqs:
        items = np.unique(np.asarray(s[:-3], dtype=np.int64))
        k = len(items)
        if k == 0:
            continue
        n_cnt[items] += 1
        if k < 2:
            continue
        i = np.repeat(items, k)
        j = np.tile(items, k)
        off = i != j
        rows.append(i[off])
        cols.append(j[off])
        vals.append(np.full(k * k - k, 1.0 / math.log(1.0 + k)))
    best = np.full(n_items + 1, -1, dtype=np.int64)
    if not rows:
        return best
    i = np.concatenate(rows)
    j = np.concatenate(cols)
    v = np.concatenate(vals)
    key = i * (n_items + 1) + j
    uk, inv = np.unique(key, return_inverse=True)
    c = np.bincount(inv, weights=v)
    ui, uj = uk // (n_items + 1), uk % (n_items + 1)
    sim = c / np.sqrt(n_cnt[ui] * n_cnt[uj])
    order = np.lexsort((uj, -sim, ui))  # per item: highest sim first, ties by id
    ui, uj = ui[order], uj[order]
    first = np.ones(len(ui), dtype=bool)
    first[1:] = ui[1:] != ui[:-1]
    best[ui[first]] = uj[first]
    return best


class Batcher:
    """What the reference's Dataset.__getitem__ + default collate do for a
    batch of users, in Python."""

    def __init__(self, seqs, n_items, best=None):
        self.seqs, self.n_items, self.best = seqs, n_items, best
        self.sets = [set(s) for s in seqs]
        self.train_users = [u for u, s in enumerate(seqs) if len(s) - 3 >= 1]

    def neg(self, seen):
        while True:
            x = random.randint(1, self.n_items)
            if x not in seen:
                return x

    def reorder(self, s, rate):
        sub = int(rate * len(s))
        start = random.randint(0, len(s) - sub)
        mid = s[start:start + sub]
        random.shuffle(mid)
        return s[:start] + mid + s[start + sub:]

    def substitute(self, s, rate):
        out = list(s)
        for p in random.sample(range(len(s)), k=max(int(rate * len(s)), 1)):
            b = int(self.best[s[p]])
            out[p] = b if b > 0 else random.randint(1, self.n_items)
        return out

    def train_batch(self, users, augment):
        inp, pos, neg = [], [], []
        aug = [[] for _ in range(2 * N_PAIRS)]
        lam = np.empty((2 * N_PAIRS, len(users)), dtype=np.float32)
        rate = np.empty_like(lam)
        for b, u in enumerate(users):
            s = self.seqs[u]
            x, y = s[:-3], s[1:-2]
            seen = self.sets[u]
            inp.append(pad_left(x))
            pos.append(pad_left(y))
            yy = y[-MAX_LEN:]
            neg.append([0] * (MAX_LEN - len(yy)) + [self.neg(seen) for _ in yy])
            if augment:
                for c in range(2 * N_PAIRS):
                    r = random.uniform(RATE_MIN, RATE_MAX)
                    op = self.reorder if random.random() < 0.5 else self.substitute
                    aug[c].append(pad_left(op(x, r)))
                    rate[c, b] = r
                    lam[c, b] = np.random.beta(BETA, BETA)
        t = dict(inp=torch.tensor(inp), pos=torch.tensor(pos), neg=torch.tensor(neg))
        if augment:
            t["aug"] = [torch.tensor(a) for a in aug]
            t["lam"] = torch.from_numpy(lam)
            t["rate"] = torch.from_numpy(rate)
        return t


# ---------------------------------------------------------------- model




class SelfAttention(nn.Module):
    def __init__(self, d, n_heads, p):
        super().__init__()
        self.h, self.dh = n_heads, d // n_heads
        self.query, self.key, self.value = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.attn_dropout = nn.Dropout(p)
        self.dense = nn.Linear(d, d)
        self.LayerNorm = LayerNorm(d)
        self.out_dropout = nn.Dropout(p)

    def split(self, x):
        b, l, _ = x.shape
        return x.view(b, l, self.h, self.dh).permute(0, 2, 1, 3)

    def forward(self, x, mask):
        q, k, v = self.split(self.query(x)), self.split(self.key(x)), self.split(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.dh) + mask
        probs = self.attn_dropout(torch.softmax(scores, dim=-1))
        ctx = (probs @ v).permute(0, 2, 1, 3).reshape(x.shape)
        return self.LayerNorm(self.out_dropout(self.dense(ctx)) + x)


class Intermediate(nn.Module):
    def __init__(self, d, p):
        super().__init__()
        self.dense_1, self.dense_2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.LayerNorm = LayerNorm(d)
        self.dropout = nn.Dropout(p)

    def forward(self, x):
        return self.LayerNorm(self.dropout(self.dense_2(gelu(self.dense_1(x)))) + x)


class Layer(nn.Module):
    def __init__(self, d, n_heads, p):
        super().__init__()
        self.attention = SelfAttention(d, n_heads, p)
        self.intermediate = Intermediate(d, p)

    def forward(self, x, mask):
        return self.intermediate(self.attention(x, mask))


class SASRec(nn.Module):
    def __init__(self, n_rows):
        super().__init__()
        self.item_embeddings = nn.Embedding(n_rows, HIDDEN, padding_idx=0)
        self.position_embeddings = nn.Embedding(MAX_LEN, HIDDEN)
        self.LayerNorm = LayerNorm(HIDDEN)
        self.dropout = nn.Dropout(DROPOUT)
        self.layers = nn.ModuleList(Layer(HIDDEN, N_HEADS, DROPOUT) for _ in range(N_LAYERS))
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                m.weight.data.normal_(0.0, 0.02)
            if isinstance(m, nn.Linear):
                m.bias.data.zero_()
        causal = torch.tril(torch.ones(MAX_LEN, MAX_LEN, dtype=torch.bool))
        self.register_buffer("causal", causal, persistent=False)

    def forward(self, ids, aug=None, lam=None):
        """ids [B, L]; with aug/lam the input item embeddings are
        lam*E(ids) + (1-lam)*E(aug) (lam [B]); the mask is that of ids."""
        keep = (ids > 0)[:, None, None, :] & self.causal
        mask = (1.0 - keep.float()) * -10000.0
        e = self.item_embeddings(ids)
        if aug is not None:
            lam = lam[:, None, None]
            e = lam * e + (1.0 - lam) * self.item_embeddings(aug)
        x = self.dropout(self.LayerNorm(e + self.position_embeddings.weight))
        for layer in self.layers:
            x = layer(x, mask)
        return x


def bce(h, ep, en, tmask, w=None):
    """Reference's cross_entropy: sum over real targets / their count; w [B]
    multiplies each sequence's positions."""
    lp = (h * ep).sum(-1)
    ln = (h * en).sum(-1)
    l = -torch.log(torch.sigmoid(lp) + 1e-24) - torch.log(1 - torch.sigmoid(ln) + 1e-24)
    l = l * tmask
    if w is not None:
        l = l * w[:, None]
    return l.sum() / tmask.sum()


def train_step(model, opt, t, stage2, stack):
    emb = model.item_embeddings
    tmask = (t["pos"] > 0).float()
    if stage2 and stack:
        k = len(t["aug"])
        ids = t["inp"].repeat(k + 1, 1)
        aug = torch.cat([t["inp"]] + t["aug"])
        lam = torch.cat([torch.ones(t["inp"].shape[0])] + list(t["lam"]))
        hh = model(ids, aug, lam).view(k + 1, *t["inp"].shape, HIDDEN)
        h, haug = hh[0], hh[1:]
    else:
        h = model(t["inp"])
    ep, en = emb(t["pos"]), emb(t["neg"])
    loss = bce(h, ep, en, tmask)
    if stage2:
        w = 1.0 / (t["lam"] * t["rate"])  # [2*n_pairs, B]
        wmin, wmax = w.min(1, keepdim=True).values, w.max(1, keepdim=True).values
        w = (w - wmin) / (wmax - wmin)
        for c in range(len(t["aug"])):
            hc = haug[c] if stack else model(t["inp"], t["aug"][c], t["lam"][c])
            loss = loss + bce(hc, ep, en, tmask, w[c])
        b = h.shape[0]
        beta = torch.distributions.Beta(torch.tensor(BETA), torch.tensor(BETA))
        for shape in [(b, MAX_LEN, 1)] * N_WHOLE_LEVEL + [(b, 1, HIDDEN)] * N_WHOLE_LEVEL:
            lm = beta.sample(shape)
            p = torch.randperm(b)
            mix = lambda x: lm * x + (1.0 - lm) * x[p]
            loss = loss + bce(mix(h), mix(ep), mix(en), tmask)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(loss)


@torch.no_grad()
def evaluate(model, seqs, n_rows, split):
    """Full ranking over all users; returns (HR, NDCG) at 5/10/20."""
    model.eval()
    cut = 2 if split == "valid" else 1
    ks = (5, 10, 20)
    hr = np.zeros(3)
    nd = np.zeros(3)
    for lo in range(0, len(seqs), BATCH):
        part = seqs[lo:lo + BATCH]
        inputs = [s[:-cut] for s in part]
        ids = torch.tensor([pad_left(x) for x in inputs])
        ans = torch.tensor([s[-cut] for s in part])
        h = model(ids)[:, -1, :]
        scores = h @ model.item_embeddings.weight.t()  # [B, n_rows]
        r = torch.tensor([b for b, x in enumerate(inputs) for _ in x])
        c = torch.tensor([i for x in inputs for i in x])
        scores[r, c] = -math.inf  # seen items (reference: set to 0)
        scores[:, 0] = -math.inf  # padding row (the reference ranks it)
        scores[:, n_rows - 1:] = -math.inf  # the reference's unused extra row
        top = torch.topk(scores, 20, dim=1).indices
        hit = top == ans[:, None]
        rank = torch.where(hit.any(1), hit.float().argmax(1), torch.full_like(ans, 20))
        for j, k in enumerate(ks):
            inside = rank < k
            hr[j] += inside.sum().item()
            nd[j] += (inside.double() / torch.log2(rank.double() + 2)).sum().item()
    model.train()
    n = len(seqs)
    out = {}
    for j, k in enumerate(ks):
        out[f"HR@{k}"] = round(hr[j] / n, 4)
        out[f"NDCG@{k}"] = round(nd[j] / n, 4)
    return out


# ---------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="../shared/data/Beauty.txt")
    ap.add_argument("--mode", choices=["stage1", "stage2", "eval"], default="stage1")
    ap.add_argument("--batches", type=int, default=10, help="timed batches (after 2 warm-up)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--stack", action="store_true",
                    help="stage2: run plain pass and augmented copies as one stacked batch")
    ap.add_argument("--split", choices=["valid", "test"], default="valid", help="eval split")
    ap.add_argument("--seed", type=int, default=2024)
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    random.seed(a.seed)
    np.random.seed(a.seed)
    torch.manual_seed(a.seed)

    seqs = load_sequences(a.data)
    n_items = max(max(s) for s in seqs)
    n_rows = n_items + 2  # the reference's item_size = max_item + 2
    model = SASRec(n_rows)
    res = {"impl": "pytorch", "torch_version": torch.__version__,
           "threads": torch.get_num_threads(),
           "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"), "mode": a.mode, "data": a.data,
           "users": len(seqs), "items": n_items}

    if a.mode == "eval":
        evaluate(model, seqs[:BATCH], n_rows, a.split)  # warm-up, one batch
        t0, c0 = time.perf_counter(), time.process_time()
        met = evaluate(model, seqs, n_rows, a.split)
        res.update(split=a.split, eval_seconds=round(time.perf_counter() - t0, 3),
                   eval_cpu_seconds=round(time.process_time() - c0, 3),
                   eval_users=len(seqs), metrics_untrained=met)
    else:
        stage2 = a.mode == "stage2"
        t0 = time.perf_counter()
        best = itemcf_iuf_best(seqs, n_items) if stage2 else None
        prep = time.perf_counter() - t0
        bt = Batcher(seqs, n_items, best)
        opt = torch.optim.Adam(model.parameters(), lr=LR, betas=(0.9, 0.999), weight_decay=0.0)
        model.train()
        users = list(bt.train_users)
        random.shuffle(users)  # RandomSampler
        n_batches = math.ceil(len(users) / BATCH)
        epoch_positions = sum(min(len(seqs[u]) - 3, MAX_LEN) for u in users)
        order = [users[(i * BATCH) % len(users):][:BATCH] for i in range(a.batches + 2)]
        for i in range(2):  # warm-up
            train_step(model, opt, bt.train_batch(order[i], stage2), stage2, a.stack)
        data_s = step_s = 0.0
        positions = 0
        c0 = time.process_time()
        for i in range(2, a.batches + 2):
            t1 = time.perf_counter()
            t = bt.train_batch(order[i], stage2)
            t2 = time.perf_counter()
            loss = train_step(model, opt, t, stage2, a.stack)
            t3 = time.perf_counter()
            data_s += t2 - t1
            step_s += t3 - t2
            positions += int((t["pos"] > 0).sum())
        cpu = (time.process_time() - c0) / a.batches
        per = (data_s + step_s) / a.batches
        res.update(
            variant=("stacked" if a.stack else "per-copy") if stage2 else "plain",
            batch=BATCH, timed_batches=a.batches, warmup_batches=2,
            seconds_per_batch=round(per, 4),
            data_seconds_per_batch=round(data_s / a.batches, 4),
            step_seconds_per_batch=round(step_s / a.batches, 4),
            cpu_seconds_per_batch=round(cpu, 4),
            batches_per_epoch=n_batches,
            epoch_seconds=round(per * n_batches, 2),
            train_positions=epoch_positions,
            positions_per_second=round(positions / (data_s + step_s)),
            last_loss=round(loss, 4))
        if stage2:
            res["itemcf_seconds_untimed"] = round(prep, 2)
            res.update(beta=BETA, rate=[RATE_MIN, RATE_MAX], n_pairs=N_PAIRS,
                       n_whole_level=N_WHOLE_LEVEL)
    res["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
