-- purpose: the bytes of [lo, hi) inside the merged ranges [starts[i], ends[i]) (a scalar macro the decontamination policies share)
-- depends:
-- params: starts, ends (the `decontamination` annotation's covered_starts, covered_ends); lo, hi (a unit's byte range)
-- (A scalar macro: a table macro shared by two policies would be nested in itself as soon as
-- they compose, which DuckDB refuses.)
create or replace macro covered_bytes(starts, ends, lo, hi) as (
    coalesce(list_sum(list_transform(
        list_zip(starts, ends), lambda c: greatest(0, least(c[2], hi) - greatest(c[1], lo))
    )), 0)
);
