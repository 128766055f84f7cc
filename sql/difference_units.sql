-- purpose: every unit of docs with MiniPLM's difference score where both models scored it, on keys alone (no text): what the difference policies rank and check coverage on
-- depends: require, require_unit, scored_models, unit_key
-- params: teacher, reference (score names); per := 'byte' | 'token'; docs := 'documents' (any table or view with doc_id; 'instances' or a view over them for instance scores)
-- One row per row of docs: unit_id (the key scores join on: instance_id over instances, else
-- doc_id), source (NULL where docs has none), n_bytes, has_teacher and has_reference (whether
-- each model has a score row for the unit), teacher_logprob, reference_logprob and score =
-- (log p_teacher(x) - log p_ref(x)) / n_bytes (per := 'token': each model's own per-token
-- log-likelihood, only meaningful when both share a tokenizer). score is NULL where a model has no
-- score row (a coverage gap: the policies refuse it unless told `missing := 'exclude'`) and where
-- a scored unit has nothing to score (empty text: a NULL log-likelihood, no bytes or tokens to
-- divide by; such units are judged and never selected). The text is never read: policies rank
-- these keys, find their cut, and join the text back for the kept units only. A score name
-- without scores, an unknown `per`, per := 'token' across two tokenizers (the `models` view knows
-- each model's tokenizer), two models scored on different units, or docs of another unit than
-- the models' is an error.
create or replace macro difference_units(teacher, reference, per := 'byte', docs := 'documents') as table
with checks as (
    select
        require(
            exists (select 1 from scores where scores.model = teacher),
            'difference: no scores named ''' || teacher || '''; scored models: ' || scored_models()
        )
        and require(
            exists (select 1 from scores where scores.model = reference),
            'difference: no scores named ''' || reference || '''; scored models: ' || scored_models()
        )
        and require(
            per in ('byte', 'token'), 'difference: per must be ''byte'' or ''token'', not ''' || per || ''''
        )
        and require(
            per = 'byte' or (
                select count(distinct m.tokenizer_hash) = 1 and bool_and(m.tokenizer_hash <> '')
                from models as m where m.model in (teacher, reference)
            ),
            'difference: per := ''token'' compares per-token log-likelihoods, which needs one tokenizer, but '''
            || teacher || ''' and ''' || reference || ''' use different ones (or one is unknown); use per := ''byte'''
        )
        and require(
            (select count(distinct m.unit) = 1 from models as m where m.model in (teacher, reference)),
            'difference: ''' || teacher || ''' and ''' || reference || ''' scored different units (documents and '
            || 'instances); score both with the same --unit'
        )
        and require_unit('difference', teacher, docs) as ok
),

units as (
    select
        unit_key(struct_pack(*columns('^(instance_id|doc_id)$'))) as unit_id,
        struct_pack(*columns('^(source|doc_id)$')) as named,  -- source where docs has one
        n_bytes
    from query_table(docs)
),

teacher_scores as (
    select doc_id, sum_logprob, n_tokens from scores where model = teacher
),

reference_scores as (
    select doc_id, sum_logprob, n_tokens from scores where model = reference
),

joined as (
    select
        u.unit_id,
        try_cast(u.named as struct(source varchar, doc_id bigint)).source as source,
        u.n_bytes,
        t.doc_id is not null as has_teacher,
        r.doc_id is not null as has_reference,
        t.sum_logprob as teacher_logprob,
        r.sum_logprob as reference_logprob,
        case per
            when 'byte' then (t.sum_logprob - r.sum_logprob) / nullif(u.n_bytes, 0)
            when 'token' then t.sum_logprob / nullif(t.n_tokens, 0) - r.sum_logprob / nullif(r.n_tokens, 0)
            else error('difference: per must be ''byte'' or ''token'', not ''' || per || '''')
        end as score
    from units as u
    left join teacher_scores as t on u.unit_id = t.doc_id
    left join reference_scores as r on u.unit_id = r.doc_id
),

final as (
    -- the second branch never has a row, but keeps the checks where DuckDB proves docs empty
    select * from joined where (select ok from checks)
    union all by name
    select null::bigint as unit_id from checks where not checks.ok
)

select * from final;
