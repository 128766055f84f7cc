-- purpose: a seeded pseudo-random number in (0, 1) per document, the same on every run and machine
-- depends:
-- params: doc_id (the document), seed (any integer; different seeds give independent draws)
-- doc_ids are already uniform 64-bit hashes; (x * a + b) mod p with p = 2^61 - 1 and a, b from
-- the seed is a universal hash family, so draws under different seeds are independent.
create or replace macro uniform(doc_id, seed) as (
    (
        (
            (doc_id::hugeint + 9223372036854775808) * (1000003 + 2 * (seed::hugeint % 1000000007))
            + (seed::hugeint % 1000000007) * 7919 + 1
        ) % 2305843009213693951
    )::double + 0.5
) / 2305843009213693951;
