"""The benchmark dataset: deterministic collections that compress like real data, shared by
bench/engine-bench, bench/drop-check-bench and the other benchmarks, so that every figure is
measured on the same bytes."""

import datetime
import hashlib
import random
import sys
import time

import bson
from bson import Binary, Int64, ObjectId
from bson.raw_bson import RawBSONDocument

MIB = 1024 * 1024
_T0 = time.monotonic()


def log(msg):
    print(f"[{time.monotonic() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


# ---- the dataset -------------------------------------------------------------------------
# Deterministic: every collection has its own random.Random seeded from its name, so the same
# script always loads the same bytes. Text is drawn from a fixed vocabulary with a Zipf-like
# frequency (compresses like prose); binary is half random bytes (incompressible, like images or
# ciphertext) and half low-entropy bytes (like raw bitmaps).

BASE = datetime.datetime(2025, 1, 1, tzinfo=datetime.timezone.utc)
_vocab_rnd = random.Random(1)
WORDS = [
    "".join(_vocab_rnd.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(_vocab_rnd.randint(2, 11)))
    for _ in range(5000)
]
_acc, CUM = 0.0, []
for _rank in range(len(WORDS)):
    _acc += 1.0 / (_rank + 1)
    CUM.append(_acc)
CITIES = ["Lisbon", "Oslo", "Kyoto", "Lagos", "Lima", "Zürich", "Montréal", "Chennai", "Hobart", "Tromsø"]
STATUSES = ["new", "paid", "packed", "shipped", "delivered", "returned", "cancelled"]
LEVELS = ["debug", "info", "info", "info", "warn", "error"]
SERVICES = ["api", "auth", "billing", "search", "cart", "mailer", "ingest"]
AGENTS = [
    "Mozilla/5.0 (X11; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Safari/605.1.15",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/129.0 Mobile Safari/537.36",
    "curl/8.5.0",
]
MIMES = ["image/png", "image/jpeg", "application/pdf", "application/octet-stream", "text/csv"]


def words(r, n):
    return " ".join(r.choices(WORDS, cum_weights=CUM, k=n))


def when(r, days=700):
    return BASE + datetime.timedelta(milliseconds=r.randrange(days * 86400 * 1000))


def oid(r):
    return ObjectId(r.randbytes(12))


def address(r):
    return {
        "street": f"{r.randint(1, 999)} {words(r, 2).title()} Street",
        "city": r.choice(CITIES),
        "zip": f"{r.randint(1000, 99999):05d}",
        "geo": [round(r.uniform(-180, 180), 6), round(r.uniform(-90, 90), 6)],
    }


def gen_users(r, i):
    return {
        "_id": i,
        "name": words(r, 2).title(),
        "email": f"user{i}@example.{r.choice(['com', 'org', 'net'])}",
        "age": r.randint(16, 95),
        "balance": round(r.uniform(-500, 25000), 2),
        "created": when(r),
        "active": r.random() < 0.8,
        "address": address(r),
        "tags": r.sample(["vip", "new", "wholesale", "returning", "eu", "apac", "beta", "staff"], r.randint(0, 4)),
        "prefs": {"lang": r.choice(["en", "pt", "ja", "no", "de"]), "newsletter": r.random() < 0.3,
                  "theme": r.choice(["dark", "light", None])},
        "bio": words(r, r.randint(0, 110)),
        "last_login": when(r) if r.random() < 0.9 else None,
    }


def gen_orders(r, i):
    lines = [
        {"sku": f"SKU-{r.randrange(40000):06d}", "title": words(r, r.randint(2, 7)), "qty": r.randint(1, 9),
         "price_cents": r.randint(99, 250000),
         "discounts": [{"code": words(r, 1).upper(), "pct": r.randint(5, 50)} for _ in range(r.randint(0, 2))]}
        for _ in range(r.randint(1, 28))
    ]
    return {
        "_id": oid(r),
        "customer": r.randrange(1_000_000),
        "placed": when(r),
        "status": r.choice(STATUSES),
        "lines": lines,
        "total_cents": Int64(sum(line["qty"] * line["price_cents"] for line in lines)),
        "shipping": {"name": words(r, 2).title(), "address": address(r), "method": r.choice(["post", "courier", "pickup"])},
        "paid": r.random() < 0.7,
        "notes": words(r, r.randint(0, 40)),
    }


def gen_products(r, i):
    return {
        "_id": f"SKU-{i:06d}",
        "title": words(r, r.randint(2, 8)).title(),
        "description": words(r, r.randint(40, 300)),
        "price_cents": r.randint(99, 250000),
        "stock": r.randint(0, 5000),
        "attributes": {"weight_g": r.randint(5, 40000),
                       "dims_cm": {"w": round(r.uniform(1, 200), 1), "h": round(r.uniform(1, 200), 1),
                                   "d": round(r.uniform(1, 200), 1)},
                       "colour": r.choice(["red", "blue", "green", "black", "white"]),
                       "material": words(r, 1)},
        "variants": [{"sku": f"SKU-{i:06d}-{v}", "size": r.choice(["XS", "S", "M", "L", "XL"]), "stock": r.randint(0, 500),
                      "price_cents": r.randint(99, 250000)} for v in range(r.randint(0, 12))],
        "images": [f"https://img.example.com/{i}/{k}-{words(r, 1)}.jpg" for k in range(r.randint(1, 8))],
        "rating": round(r.uniform(1, 5), 2),
        "reviews": Int64(r.randrange(10**9)),
        "updated": when(r),
    }


def gen_articles(r, i):
    doc = {
        "_id": oid(r),
        "title": words(r, r.randint(3, 12)).title(),
        "author": {"id": r.randrange(1_000_000), "name": words(r, 2).title()},
        "published": when(r),
        "body": words(r, r.randint(180, 950)),
        "tags": [words(r, 1) for _ in range(r.randint(0, 6))],
        "comments": [{"by": words(r, 1), "at": when(r), "text": words(r, r.randint(3, 35)), "likes": r.randint(0, 999)}
                     for _ in range(r.randint(0, 6))],
        "draft": r.random() < 0.05,
    }
    while len(bson.encode(doc)) > 8000:  # keep every document under 8 KiB
        doc["body"] = doc["body"].rsplit(" ", 25)[0]
    return doc


def gen_attachments(r, i):
    n = r.randint(120, 7600)
    if r.random() < 0.5:
        data = r.randbytes(n)
    else:
        data = bytes(r.choices(range(16), k=n))
    return {
        "_id": oid(r),
        "filename": f"{words(r, r.randint(1, 3)).replace(' ', '-')}.{r.choice(['png', 'jpg', 'pdf', 'bin', 'csv'])}",
        "mime": r.choice(MIMES),
        "uploaded": when(r),
        "owner": r.randrange(1_000_000),
        "sha256": hashlib.sha256(data).hexdigest(),
        "data": Binary(data),
    }


def gen_sessions(r, i):
    return {
        "_id": Binary(r.randbytes(16), 4),
        "user": r.randrange(1_000_000),
        "started": when(r),
        "duration_ms": r.randint(50, 7_200_000),
        "ip": f"10.{r.randrange(256)}.{r.randrange(256)}.{r.randrange(256)}",
        "agent": r.choice(AGENTS),
        "referrer": r.choice(["https://www.example.com/", "https://search.example.net/?q=" + words(r, 2).replace(" ", "+"), None]),
        "pages": [f"/{words(r, 1)}/{r.randrange(10000)}" for _ in range(r.randint(0, 10))],
        "flags": {"mobile": r.random() < 0.4, "bot": r.random() < 0.05},
    }


def gen_events(r, i):
    return {
        "_id": oid(r),
        "ts": when(r, 30),
        "level": r.choice(LEVELS),
        "service": r.choice(SERVICES),
        "host": f"host-{r.randrange(500):03d}",
        "msg": words(r, r.randint(4, 18)),
        "ctx": {"req": r.randbytes(8).hex(), "user": r.randrange(1_000_000), "latency_ms": round(r.expovariate(0.02), 3)},
    }


def gen_metrics(r, i):
    n = r.randint(30, 230)
    return {
        "_id": f"host-{i % 500:03d}:{i // 500}",
        "host": f"host-{i % 500:03d}",
        "ts": when(r, 30),
        "interval_s": 10,
        "cpu": [round(r.uniform(0, 100), 2) for _ in range(n)],
        "mem": [Int64(r.randrange(2**34)) for _ in range(n // 2)],
        "stats": {"min": round(r.uniform(0, 10), 3), "max": round(r.uniform(90, 100), 3), "p99": round(r.uniform(80, 99), 3)},
        "labels": {"dc": r.choice(["lis", "osl", "kix"]), "rack": r.randint(1, 40)},
    }


def gen_audit(r, i):
    fields = {words(r, 1): r.choice([r.randint(0, 10**6), words(r, 3), r.random() < 0.5, None]) for _ in range(r.randint(1, 15))}
    return {
        "_id": Int64(1_700_000_000_000 + i),
        "actor": {"id": r.randrange(1_000_000), "role": r.choice(["admin", "user", "service"])},
        "action": r.choice(["create", "update", "delete", "login", "export"]),
        "target": {"type": r.choice(["order", "user", "product"]), "id": r.randrange(10**7)},
        "before": fields,
        "after": {k: (v if r.random() < 0.6 else words(r, 2)) for k, v in fields.items()},
        # FerretDB 1.x refuses arrays directly inside arrays, so the rows are documents.
        "matrix": [{"row": [r.randint(0, 99) for _ in range(r.randint(1, 5))]} for _ in range(r.randint(0, 5))],
        "ok": r.random() < 0.95,
        "at": when(r),
        "reason": words(r, r.randint(4, 30)) if r.random() < 0.2 else None,
    }


# (db, collection, generator, target size in MiB at scale 1)
DATASET = [
    ("app", "users", gen_users, 20),
    ("app", "orders", gen_orders, 38),
    ("app", "products", gen_products, 24),
    ("app", "articles", gen_articles, 38),
    ("app", "attachments", gen_attachments, 38),
    ("app", "sessions", gen_sessions, 14),
    ("logs", "events", gen_events, 16),
    ("logs", "metrics", gen_metrics, 22),
    ("logs", "audit", gen_audit, 10),
]


def load_dataset(client, scale):
    """Insert every collection up to its target size; returns per-collection stats."""
    stats = {}
    for db, coll, gen, mib in DATASET:
        r = random.Random(f"mongosnap-bench/{db}.{coll}")
        target = int(mib * MIB * scale)
        total = n = 0
        lo, hi = 1 << 30, 0
        batch, batch_bytes = [], 0
        t = time.monotonic()
        while total < target:
            raw = bson.encode(gen(r, n))
            size = len(raw)
            lo, hi = min(lo, size), max(hi, size)
            total += size
            n += 1
            batch.append(RawBSONDocument(raw))
            batch_bytes += size
            if len(batch) >= 1000 or batch_bytes >= 4 * MIB:
                client[db][coll].insert_many(batch, ordered=True)
                batch, batch_bytes = [], 0
        if batch:
            client[db][coll].insert_many(batch, ordered=True)
        stats[f"{db}.{coll}"] = {"documents": n, "bson_bytes": total, "min_doc_bytes": lo, "max_doc_bytes": hi,
                                 "mean_doc_bytes": round(total / n, 1)}
        log(f"loaded {db}.{coll}: {n} documents, {total} bytes of BSON ({lo}-{hi} B each) "
            f"in {time.monotonic() - t:.1f}s")
    return stats
