-- purpose: units (documents or instances) whose bytes overlap the evaluation sets' n-grams at most max_fraction, on the `decontamination` annotation
-- depends: covered_bytes, filter_decontaminated_checks, unit_bytes
-- params: max_fraction := 0 (drop any unit a matched n-gram touches); docs := 'documents'; missing := 'error' | 'exclude' | 'keep'
-- GPT-3's and OLMo's decontamination as a view: `corpusdb decontaminate DB --against FILES`
-- finds every word n-gram (13 by default) of each document that occurs in the evaluation sets;
-- a unit is kept when the bytes of it inside such n-grams are at most max_fraction of its bytes
-- (the default 0 keeps only untouched units). Over instances (docs := 'instances') each
-- instance is judged by its own span, so the clean instances of a contaminated document stay.
-- Every row of docs needs a decontamination row: documents ingested after the job ran are an
-- error naming the fix, unless missing := 'exclude' (dropped) or 'keep' (kept unjudged). The
-- result has the columns of docs.
create or replace macro filter_decontaminated(max_fraction := 0, docs := 'documents', missing := 'error') as table
with unjudged as (
    -- keys alone: how many rows of docs have no decontamination row
    select count(*) filter (where a.doc_id is null) as n_missing, count(*) as n_units
    from (select doc_id from query_table(docs)) as d
    left join (select doc_id from annotations_decontamination) as a on d.doc_id = a.doc_id
),

checks as (
    select
        filter_decontaminated_checks(max_fraction, missing, unjudged.n_missing, unjudged.n_units, docs) as ok,
        max_fraction as high
    from unjudged
),

spans as (
    -- the unit's byte range: its span where docs has one (instances), else the whole document
    select d.*, unit_bytes(struct_pack(*columns('^(doc_id|byte_start|byte_end|n_bytes)$'))) as unit_span
    from query_table(docs) as d
),

final as (
    select s.* exclude (unit_span)
    from spans as s
    left join annotations_decontamination as a on s.doc_id = a.doc_id, checks
    where
        checks.ok
        and (
            coalesce(
                covered_bytes(a.covered_starts, a.covered_ends, s.unit_span.lo, s.unit_span.hi)
                / nullif(s.unit_span.hi - s.unit_span.lo, 0),
                0
            ) <= checks.high
            and a.doc_id is not null
            or (a.doc_id is null and missing = 'keep')
        )
    union all by name
    select null::bigint as doc_id from checks where not checks.ok
)

select * from final;
