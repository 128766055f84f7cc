-- purpose: MiniPLM's difference score of every unit of docs, on keys alone (no text), after the coverage check: what a user's own ranking starts from
-- depends: difference_units, difference_coverage
-- params: teacher, reference (score names); per := 'byte' | 'token'; docs := 'documents'; missing := 'error' | 'exclude'
-- One row per row of docs that has a difference score: unit_id, source, n_bytes,
-- teacher_logprob, reference_logprob and score (see `difference_units`). A unit of docs without a
-- score of either model is an error naming how many and the `corpusdb score` run that fills the
-- gap, unless missing := 'exclude' (then those units get no row). Units with nothing to score
-- (empty text) get no row either way.
create or replace macro difference_keys(teacher, reference, per := 'byte', docs := 'documents', missing := 'error') as table
with units as materialized (
    select * from difference_units(teacher, reference, per := per, docs := docs)
),

checks as (
    select difference_coverage(
        'difference_keys', teacher, reference, missing,
        count(*) filter (where not has_teacher), count(*) filter (where not has_reference),
        count(*) filter (where not (has_teacher and has_reference)), count(*), docs
    ) as ok
    from units
),

final as (
    select unit_id, source, n_bytes, teacher_logprob, reference_logprob, score
    from units
    where score is not null and (select ok from checks)
)

select * from final;
