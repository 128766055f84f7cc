-- purpose: a unit's byte range in its document's text: an instance's span, or the whole document (a scalar macro the decontamination policies share)
-- depends:
-- params: keys (the row's columns as a struct: unit_bytes(struct_pack(*columns('^(doc_id|byte_start|byte_end|n_bytes)$'))))
-- Returns struct(lo, hi): [byte_start, byte_end) for a row of instances, [0, n_bytes) for a
-- document (a relation without byte_start binds too: the cast by name fills the missing fields
-- with NULL, as unit_key does).
create or replace macro unit_bytes(keys) as (
    struct_pack(
        lo := coalesce(try_cast(keys as struct(doc_id bigint, byte_start bigint, byte_end bigint, n_bytes bigint)).byte_start, 0),
        hi := coalesce(
            try_cast(keys as struct(doc_id bigint, byte_start bigint, byte_end bigint, n_bytes bigint)).byte_end,
            try_cast(keys as struct(doc_id bigint, byte_start bigint, byte_end bigint, n_bytes bigint)).n_bytes
        )
    )
);
