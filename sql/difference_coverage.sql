-- purpose: the difference policies' coverage check: every unit of docs has both scores, or missing := 'exclude' was asked for
-- depends: require_coverage, score_command
-- params: policy; teacher, reference (score names); missing ('error' or 'exclude'); n_no_teacher, n_no_reference, n_missing (units without a teacher score, without a reference score, without either), n_units; docs
-- A policy that ranked only the scored units would return alpha of those, not of docs: a
-- reference scored on a part of the pool (a job cut short, another view) would silently select
-- from that part only. With missing := 'exclude' the policy ranks the units with both scores, and
-- alpha is of those.
create or replace macro difference_coverage(policy, teacher, reference, missing, n_no_teacher, n_no_reference, n_missing, n_units, docs) as (
    require_coverage(
        policy, missing, ['error', 'exclude'], n_missing, n_units, docs,
        case
            when n_no_teacher > 0 and n_no_reference > 0
                then 'score of ''' || teacher || ''' (' || n_no_teacher || ') or of ''' || reference || ''' ('
                || n_no_reference || ')'
            when n_no_teacher > 0 then 'score of ''' || teacher || ''''
            else 'score of ''' || reference || ''''
        end,
        'score them with '
        || case
            when n_no_teacher > 0 and n_no_reference > 0
                then score_command(teacher, docs) || ' and ' || score_command(reference, docs)
            when n_no_teacher > 0 then score_command(teacher, docs)
            else score_command(reference, docs)
        end
        || ' (a re-run scores only the units without a score)',
        'missing := ''exclude'' to rank only the ' || (n_units - n_missing) || ' units with both scores (alpha is then of those)'
    )
);
