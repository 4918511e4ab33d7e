"""A sample dataset for the demo and the benchmark: an online shop with customers, orders,
products and events, in several collections with indexes. Deterministic for a given seed."""

import datetime
import random
import sys

import pymongo
from bson import ObjectId


def load(client, db_name="shop", scale=1, seed=42):
    """Insert about 20,000 x scale documents into db_name; returns the count inserted."""
    rnd = random.Random(seed)
    db = client[db_name]
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    total = 0

    customers = [
        {
            "_id": i,
            "name": f"Customer {i}",
            "email": f"customer{i}@example.com",
            "city": rnd.choice(["Lisbon", "Oslo", "Kyoto", "Lagos", "Lima", "Zürich"]),
            "since": start - datetime.timedelta(days=rnd.randint(0, 2000)),
            "tags": rnd.sample(["vip", "new", "wholesale", "returning", "eu", "apac"], 2),
        }
        for i in range(2000 * scale)
    ]
    db.customers.insert_many(customers, ordered=False)
    db.customers.create_index("email", unique=True)
    db.customers.create_index([("city", 1), ("since", -1)])
    total += len(customers)

    products = [
        {
            "_id": f"SKU-{i:06d}",
            "title": f"Product {i}",
            # Cents as an integer: FerretDB 1.x has no decimal128 (the archive tests cover it).
            "price_cents": rnd.randint(100, 99999),
            "stock": rnd.randint(0, 500),
            "attributes": {"weight_g": rnd.randint(10, 5000), "colour": rnd.choice(["red", "blue", "green"])},
        }
        for i in range(1000 * scale)
    ]
    db.products.insert_many(products, ordered=False)
    total += len(products)

    batch = []
    for i in range(12000 * scale):
        lines = [
            {"sku": f"SKU-{rnd.randrange(1000 * scale):06d}", "qty": rnd.randint(1, 5)}
            for _ in range(rnd.randint(1, 6))
        ]
        batch.append(
            {
                "_id": ObjectId.from_datetime(start + datetime.timedelta(seconds=i * 37)),
                "customer": rnd.randrange(2000 * scale),
                "lines": lines,
                "status": rnd.choice(["new", "paid", "shipped", "delivered", "returned"]),
                "placed": start + datetime.timedelta(seconds=i * 37),
                "note": "".join(rnd.choice("abcdefghijklmnopqrstuvwxyz ") for _ in range(rnd.randint(0, 200))),
            }
        )
        if len(batch) == 1000:
            db.orders.insert_many(batch, ordered=False)
            total += len(batch)
            batch = []
    if batch:
        db.orders.insert_many(batch, ordered=False)
        total += len(batch)
    db.orders.create_index([("customer", 1), ("placed", -1)])
    db.orders.create_index("status")

    db.create_collection("events", capped=True, size=4 * 1024 * 1024)
    events = [{"seq": i, "kind": rnd.choice(["login", "view", "cart"]), "at": start} for i in range(5000 * scale)]
    db.events.insert_many(events)
    total += len(events)
    return total


if __name__ == "__main__":
    uri = sys.argv[1]
    db_name = sys.argv[2] if len(sys.argv) > 2 else "shop"
    scale = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    c = pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000)
    print(load(c, db_name, scale))
