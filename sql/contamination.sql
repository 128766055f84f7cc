-- purpose: each unit of docs (document or instance) with its evaluation-set n-grams, on the `decontamination` annotation
-- depends: covered_bytes
-- params: docs := 'documents' (or 'instances', or any view over either)
-- One row per row of docs, its columns plus decontam_matched (matched n-grams that begin inside
-- the unit), decontam_covered_bytes (bytes of the unit inside a matched n-gram) and
-- decontam_fraction (those bytes over the unit's bytes; 0 for an empty unit). A document is the
-- bytes [0, n_bytes) of its text, an instance its span [byte_start, byte_end), so the numbers of
-- a document's instances add up to the document's. Rows without an annotation row get NULLs
-- (`corpusdb decontaminate DB --against FILES` computes them; filter_decontaminated refuses them).
create or replace macro contamination(docs := 'documents') as table
with spans as (
    -- the unit's byte range: its span where docs has one (instances), else the whole document
    select
        d.*,
        try_cast(struct_pack(*columns('^(doc_id|byte_start|byte_end|n_bytes)$')) as struct(
            doc_id bigint, byte_start bigint, byte_end bigint, n_bytes bigint
        )) as unit_span
    from query_table(docs) as d
),

ranged as (
    select
        s.* exclude (unit_span),
        coalesce(s.unit_span.byte_start, 0) as unit_start,
        coalesce(s.unit_span.byte_end, s.unit_span.n_bytes) as unit_end
    from spans as s
),

final as (
    select
        r.* exclude (unit_start, unit_end),
        len(list_filter(a.match_starts, lambda b: b >= r.unit_start and b < r.unit_end)) as decontam_matched,
        covered_bytes(a.covered_starts, a.covered_ends, r.unit_start, r.unit_end) as decontam_covered_bytes,
        case when a.doc_id is null then null
            else coalesce(decontam_covered_bytes / nullif(r.unit_end - r.unit_start, 0), 0.0)
        end as decontam_fraction
    from ranged as r
    left join annotations_decontamination as a on r.doc_id = a.doc_id
)

select * from final;
