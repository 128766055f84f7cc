-- purpose: the score names that have scores, as one comma-separated string (for policies' error messages)
-- depends:
-- params: none
create or replace macro scored_models() as (
    coalesce((select string_agg(distinct model, ', ' order by model) from scores), 'none; run corpusdb score first')
);
