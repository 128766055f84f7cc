-- purpose: documents whose loss under a model lies in a range (e.g. drop gibberish and boilerplate)
-- depends: filter_loss_checks, unit_key
-- params: model (score name); min_loss := null; max_loss := null; per := 'byte' | 'token'; docs := 'documents'; missing := 'error' | 'exclude' | 'keep'
-- Losses are natural-log nats per byte (or per token). Every unit of docs needs a score of the
-- model: unscored units are an error naming how many and the `corpusdb score` run that fills the
-- gap (counted by an anti-join on keys), unless missing := 'exclude' (dropped) or 'keep' (kept
-- unjudged). Scored units without a loss (empty text) are dropped. A model without scores, an
-- unknown `per` or min_loss > max_loss is an error.
create or replace macro filter_loss(
    model, min_loss := null, max_loss := null, per := 'byte', docs := 'documents', missing := 'error'
) as table
with model_losses as (
    -- every unit the model scored (empty ones too, with a NULL loss)
    select
        doc_id,
        case per
            when 'byte' then -sum_logprob / nullif(n_bytes, 0)
            when 'token' then -sum_logprob / nullif(n_tokens, 0)
            else error('filter_loss: per must be ''byte'' or ''token'', not ''' || per || '''')
        end as filter_loss
    from (select doc_id, sum_logprob, n_tokens, n_bytes, scores.model as scored_by from scores)
    where scored_by = model
),

unjudged as (
    -- keys alone: how many units of docs the model did not score
    select count(*) filter (where l.doc_id is null) as n_missing, count(*) as n_units
    from (select unit_key(struct_pack(*columns('^(instance_id|doc_id)$'))) as unit_id from query_table(docs)) as d
    left join model_losses as l on d.unit_id = l.doc_id
),

checks as (
    select
        filter_loss_checks(model, per, min_loss, max_loss, missing, unjudged.n_missing, unjudged.n_units, docs) as ok,
        coalesce(min_loss, '-infinity'::double) as low,
        coalesce(max_loss, 'infinity'::double) as high
    from unjudged
),

final as (
    -- the bounds come through `checks`, so DuckDB must evaluate it (see filter_length); the
    -- second branch never has a row but keeps the checks when no file holds the model's scores
    select d.* exclude (unit_id)
    from (select *, unit_key(struct_pack(*columns('^(instance_id|doc_id)$'))) as unit_id from query_table(docs)) as d
    left join model_losses as l on d.unit_id = l.doc_id, checks
    where
        checks.ok
        and ((l.filter_loss >= checks.low and l.filter_loss <= checks.high) or (l.doc_id is null and missing = 'keep'))
    union all by name
    select null::bigint as doc_id from checks where not checks.ok
)

select * from final;
