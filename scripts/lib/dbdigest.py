"""Deterministic per-collection digests of a MongoDB deployment: SHA-256 over every document's
raw BSON bytes in _id order, plus counts and index names. Two deployments hold the same data
exactly when their digests are equal. Used by scripts/demo, the integration tests and bench/."""

import hashlib
import sys

from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument

SKIP_DBS = {"admin", "local", "config"}
RAW = CodecOptions(document_class=RawBSONDocument)


def collection_digest(coll):
    """(count, hex sha256) of the collection's documents, byte-exact, in _id order."""
    h = hashlib.sha256()
    n = 0
    raw = coll.with_options(codec_options=RAW)
    for doc in raw.find({}, sort=[("_id", 1)], batch_size=1000):
        h.update(doc.raw)
        n += 1
    return n, h.hexdigest()


def deployment_digest(client, dbs=None, rename=None):
    """{"db.coll": {"count", "sha256", "indexes", "options"}} for every user collection.
    rename maps a source db name to the name to report it under (for comparing a copy)."""
    out = {}
    for db_name in sorted(dbs or client.list_database_names()):
        if db_name in SKIP_DBS:
            continue
        db = client[db_name]
        for info in db.list_collections():
            name = info["name"]
            if name.startswith("system."):
                continue
            key = f"{(rename or {}).get(db_name, db_name)}.{name}"
            if info.get("type") == "view":
                out[key] = {"view": info.get("options", {})}
                continue
            count, sha = collection_digest(db[name])
            indexes = sorted(
                (i["name"], tuple(i["key"].items()), bool(i.get("unique")))
                for i in db[name].list_indexes()
            )
            out[key] = {
                "count": count,
                "sha256": sha,
                "indexes": indexes,
                "capped": bool(info.get("options", {}).get("capped")),
            }
    return out


def main(argv):
    import pymongo

    client = pymongo.MongoClient(argv[1], serverSelectionTimeoutMS=5000)
    dbs = argv[2:] or None
    for key, value in deployment_digest(client, dbs).items():
        print(key, value)


if __name__ == "__main__":
    main(sys.argv)
