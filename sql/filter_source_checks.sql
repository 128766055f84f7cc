-- purpose: filter_source's check on the sources present: every source named is there (and at least one is named)
-- depends: require
-- params: sources (the call's list); present (the sources of docs, sorted)
-- filter_source runs it on its own docs; a distributed selection (`corpusdb select`) on the
-- sources its tasks found, so both refuse with the same words.
create or replace macro filter_source_checks(sources, present) as (
    require(
        len(sources) > 0 and list_bool_and(list_transform(sources, lambda s: list_contains(present, s))),
        'filter_source: no documents of source(s) '
        || list_filter(sources, lambda s: not list_contains(present, s))::varchar
        || '; sources: ' || present::varchar
    )
);
