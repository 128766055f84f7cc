-- purpose: a mixture: a total budget split over sources by weight, each source filled in seeded random order
-- depends: quota, require
-- params: weights := map {'source': weight, ...}; total (budget in unit); unit := 'bytes' | 'tokens' | 'documents'; model := null; seed := 0; docs := 'documents'; missing := 'error' | 'exclude' (as quota's)
-- Source s gets the budget total * weight_s / sum(weights), filled as `quota` fills budgets; a
-- source with too little data falls short of its share (nothing is reallocated). Sources not
-- named in weights are dropped; a source named in weights that docs does not hold is an error, and
-- so are weights or a total that are not positive. Coverage (unit 'tokens') as in `quota`.
create or replace macro mixture(
    weights, total, unit := 'bytes', model := null, seed := 0, docs := 'documents', missing := 'error'
) as table
with checks as (
    select
        require(
            len(map_keys(weights)) > 0 and list_bool_and(list_transform(map_values(weights), lambda w: w > 0)),
            'mixture: every weight must be positive, not ' || weights::varchar
        )
        and require(total > 0, 'mixture: total must be positive, not ' || coalesce(total::varchar, 'NULL')) as ok
),

final as (
    select *
    from quota(
        map_from_entries(
            list_transform(
                map_entries(weights),
                lambda entry: {'key': entry.key, 'value': total * entry.value / list_sum(map_values(weights))}
            )
        ),
        unit := unit,
        model := model,
        seed := seed,
        docs := docs,
        missing := missing,
        policy := 'mixture'
    )
    where (select ok from checks)
)

select * from final;
