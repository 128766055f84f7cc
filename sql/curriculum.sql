-- purpose: documents ordered easy to hard by a model's loss (or any column), optionally cut into stages
-- depends: curriculum_checks, curriculum_coverage, model_losses, unit_key
-- params: model (score name, or null to order by a column of docs); key := 'loss_per_byte' (or 'loss_per_token', 'bits_per_byte', or any column of docs such as difference's 'score'); descending := false; stages := 1; docs := 'documents'; missing := 'error' | 'last' | 'exclude'
-- Rows come out in curriculum order; curriculum_rank (1 = easiest) and stage (1..stages, equal
-- counts, as ntile gives them) let consumers re-establish it. Ordered by a model's loss, every
-- unit of docs needs a score of the model: unscored units are an error naming how many and the
-- `corpusdb score` run that fills the gap, unless missing := 'last' (after every scored unit, in
-- unit_id order) or 'exclude' (dropped; ranks and stages count the scored units only). Scored
-- units without a loss (empty text), and rows without a value of any other key, come last. The
-- ranking runs on keys and losses alone; the text is joined back to the ranked keys and sorted
-- once. A unit that docs repeats is ranked once, and its rows share its rank. A model without
-- scores or stages < 1 is an error.
create or replace macro curriculum(
    model, key := 'loss_per_byte', descending := false, stages := 1, docs := 'documents', missing := 'error'
) as table
with checks as (
    select curriculum_checks(model, key, stages, docs) as ok
),

scored_losses as (
    -- every unit the model scored (empty ones too, with NULL losses: judged, and never first)
    select * from model_losses(model)
),

units as not materialized (
    select *, unit_key(struct_pack(*columns('^(instance_id|doc_id)$'))) as unit_id from query_table(docs)
),

unit_ids as (
    -- each unit once: `documents` holds each doc_id once (ingest and register_parts refuse a repeat),
    -- so only another docs (instances, a view) pays for a distinct
    select unit_id from units where docs = 'documents'
    union all
    select distinct unit_id from units where docs <> 'documents'
),

keyed as (
    -- the ranking's inputs only, one row per unit (a unit that docs repeats is ranked once, and each
    -- of its rows comes back with that rank): DuckDB reads no text here.
    -- Ordered by the model's loss: the units of docs joined to the model's losses (one row a unit)
    select
        u.unit_id,
        l.doc_id is not null as scored,
        case key
            when 'loss_per_token' then l.loss_per_token
            when 'bits_per_byte' then l.bits_per_byte
            else l.loss_per_byte
        end as sort_key,
        l.loss_per_token,
        l.loss_per_byte,
        l.bits_per_byte
    from unit_ids as u
    left join scored_losses as l on u.unit_id = l.doc_id
    where model is not null and key in ('loss_per_byte', 'loss_per_token', 'bits_per_byte')
    union all
    -- ordered by any other column (of docs, or of the losses)
    select
        unit_id,
        true as scored,
        min(columns('^' || key || '$')) as sort_key,  -- the column named key, not every column containing it
        any_value(loss_per_token) as loss_per_token,
        any_value(loss_per_byte) as loss_per_byte,
        any_value(bits_per_byte) as bits_per_byte
    from (
        select u.*, l.* exclude (doc_id)
        from (select columns(lambda c: c <> 'text') from units) as u
        left join scored_losses as l on u.unit_id = l.doc_id
        where not (model is not null and key in ('loss_per_byte', 'loss_per_token', 'bits_per_byte'))
    )
    group by unit_id
),

ranked as (
    -- the one sort of the keys; the text is joined back to the ranked keys and sorted once, in final
    select
        unit_id,
        scored,
        loss_per_token,
        loss_per_byte,
        row_number() over (
            order by
                (not scored),
                case when descending then -sort_key else sort_key end asc nulls last,
                unit_id asc
        ) as curriculum_rank
    from keyed
),

sizes as (
    -- the stages' sizes, and the coverage check: unscored units are ranked last, so dropping them
    -- (missing := 'exclude') leaves the scored units' ranks as they are
    select
        count(*) filter (where scored or missing <> 'exclude') // stages as per_stage,
        count(*) filter (where scored or missing <> 'exclude') % stages as longer,
        curriculum_coverage(model, missing, count(*) filter (where not scored), count(*), docs) as covered
    from ranked
),

final as (
    -- ntile(stages) by arithmetic: the first (n % stages) stages hold one row more
    select
        d.* exclude (unit_id),
        r.loss_per_token,
        r.loss_per_byte,
        r.loss_per_byte / ln(2) as bits_per_byte,  -- as model_losses computes it, one column fewer to sort and join
        r.curriculum_rank,
        case
            when r.curriculum_rank <= longer * (per_stage + 1) then (r.curriculum_rank - 1) // (per_stage + 1) + 1
            else longer + (r.curriculum_rank - 1 - longer * (per_stage + 1)) // per_stage + 1
        end as stage
    from units as d
    inner join ranked as r on d.unit_id = r.unit_id
    cross join sizes
    where (select ok from checks) and sizes.covered and (r.scored or missing <> 'exclude')
    order by r.curriculum_rank
)

select * from final;
