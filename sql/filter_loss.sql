-- purpose: documents whose loss under a model lies in a range (e.g. drop gibberish and boilerplate)
-- depends: losses, require, require_unit, scored_models, unit_key
-- params: model (score name); min_loss := null; max_loss := null; per := 'byte' | 'token'; docs := 'documents'
-- Losses are natural-log nats per byte (or per token). Documents without a score are dropped. A
-- model without scores, an unknown `per` or min_loss > max_loss is an error.
create or replace macro filter_loss(model, min_loss := null, max_loss := null, per := 'byte', docs := 'documents') as table
with checks as (
    select
        require(
            exists (select 1 from scores where scores.model = model),
            'filter_loss: no scores named ''' || coalesce(model, 'NULL') || '''; scored models: ' || scored_models()
        )
        and require(per in ('byte', 'token'), 'filter_loss: per must be ''byte'' or ''token'', not ''' || per || '''')
        and require(
            min_loss is null or max_loss is null or min_loss <= max_loss,
            'filter_loss: min_loss ' || min_loss || ' is above max_loss ' || max_loss
        )
        and require_unit('filter_loss', model, docs) as ok,
        coalesce(min_loss, '-infinity'::double) as low,
        coalesce(max_loss, 'infinity'::double) as high
),

model_losses as (
    select
        doc_id,
        case per
            when 'byte' then loss_per_byte
            when 'token' then loss_per_token
            else error('filter_loss: per must be ''byte'' or ''token'', not ''' || per || '''')
        end as filter_loss
    from (select * exclude (model), losses.model as scored_by from losses)
    where scored_by = model
),

final as (
    -- the bounds come through `checks`, so DuckDB must evaluate it (see filter_length); the
    -- second branch never has a row but keeps the checks when no file holds the model's scores
    select d.* exclude (unit_id)
    from (select *, unit_key(struct_pack(*columns('^(instance_id|doc_id)$'))) as unit_id from query_table(docs)) as d
    inner join model_losses as l on d.unit_id = l.doc_id, checks
    where checks.ok and l.filter_loss >= checks.low and l.filter_loss <= checks.high
    union all by name
    select null::bigint as doc_id from checks where not checks.ok
)

select * from final;
