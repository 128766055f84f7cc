-- purpose: a policy's coverage check: every unit of docs has what the policy judges it by, or the user said what to do with the rest
-- depends: require
-- params: policy (its name); missing (the user's choice); options (the choices the policy offers, 'error' first); n_missing, n_units (counts over docs); docs; lacking (what those units have no row of, e.g. 'score of ''reference'''); fix (how to compute it); ways (what each other choice does)
-- The rule every policy follows: a unit of docs that the policy cannot judge (no score, no
-- annotation row, no cluster row) is an error by default, one line naming the policy, the table,
-- how many of how many units, the job that computes what is missing, and the explicit choices
-- (`missing := 'exclude'`, ...). The counts come from an anti-join on keys, never from the text.
create or replace macro require_coverage(policy, missing, options, n_missing, n_units, docs, lacking, fix, ways) as (
    require(
        list_contains(options, missing),
        policy || ': missing must be one of ' || array_to_string(list_transform(options, lambda o: '''' || o || ''''), ', ')
        || ', not ' || coalesce('''' || missing || '''', 'NULL')
    )
    and require(
        missing <> 'error' or coalesce(n_missing, 0) = 0,
        policy || ': ' || n_missing || ' of ' || n_units || ' units of ''' || docs || ''' have no ' || lacking || '; '
        || fix || ', or pass ' || ways
    )
);
