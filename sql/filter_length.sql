-- purpose: documents whose UTF-8 size lies in [min_bytes, max_bytes]
-- depends: filter_length_checks
-- params: min_bytes := 0; max_bytes := null (no upper bound); docs := 'documents'
create or replace macro filter_length(min_bytes := 0, max_bytes := null, docs := 'documents') as table
with checks as (
    select filter_length_checks(min_bytes, max_bytes) as ok,
    min_bytes as low,
    coalesce(max_bytes, 9223372036854775807) as high
),

final as (
    -- the bounds come through `checks`, so DuckDB must evaluate it (constant bounds that cannot
    -- hold would let the optimizer skip the scan, and the check with it); so does the second branch,
    -- which never has a row, where the parts' statistics rule every row out
    select d.*
    from query_table(docs) as d, checks
    where checks.ok and d.n_bytes >= checks.low and d.n_bytes <= checks.high
    union all by name
    select null::bigint as doc_id from checks where not checks.ok
)

select * from final;
