-- purpose: each unit of docs (document or instance) with its evaluation-set n-grams, on the `decontamination` annotation
-- depends: covered_bytes, unit_bytes
-- params: docs := 'documents' (or 'instances', or any view over either)
-- One row per row of docs, its columns plus decontam_matched (matched n-grams that begin inside
-- the unit), decontam_covered_bytes (bytes of the unit inside a matched n-gram) and
-- decontam_fraction (those bytes over the unit's bytes; 0 for an empty unit). A document is the
-- bytes [0, n_bytes) of its text, an instance its span [byte_start, byte_end), so the numbers of
-- a document's instances add up to the document's. Rows without an annotation row get NULLs
-- (`corpusdb decontaminate DB --against FILES` computes them; filter_decontaminated refuses them).
create or replace macro contamination(docs := 'documents') as table
with ranged as (
    -- the unit's byte range: its span where docs has one (instances), else the whole document
    select d.*, unit_bytes(struct_pack(*columns('^(doc_id|byte_start|byte_end|n_bytes)$'))) as unit_span
    from query_table(docs) as d
),

final as (
    select
        r.* exclude (unit_span),
        len(list_filter(a.match_starts, lambda b: b >= r.unit_span.lo and b < r.unit_span.hi)) as decontam_matched,
        covered_bytes(a.covered_starts, a.covered_ends, r.unit_span.lo, r.unit_span.hi) as decontam_covered_bytes,
        case when a.doc_id is null then null
            else coalesce(decontam_covered_bytes / nullif(r.unit_span.hi - r.unit_span.lo, 0), 0.0)
        end as decontam_fraction
    from ranged as r
    left join annotations_decontamination as a on r.doc_id = a.doc_id
)

select * from final;
