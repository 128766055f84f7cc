-- purpose: filter_quality's checks on counts alone: its arguments, and a quality row for every unit of docs unless missing says otherwise
-- depends: require, require_coverage
-- params: rules; chain; c4_terminal_punct; missing; n_missing, n_units (units of docs without a quality row, and all of them); docs
-- filter_quality runs them on its own counts; a distributed selection (`corpusdb select`) on its
-- tasks' summed counts, so both refuse with the same words.
create or replace macro filter_quality_checks(rules, chain, c4_terminal_punct, missing, n_missing, n_units, docs) as (
    require(
        len(rules) > 0 and list_bool_and(list_transform(
            rules, lambda r: list_contains(['gopher_quality', 'gopher_repetition', 'c4', 'fineweb'], r)
        )),
        'filter_quality: rules must be a non-empty list of gopher_quality, gopher_repetition, c4, fineweb, not '
        || coalesce(rules::varchar, 'NULL')
    )
    and require(
        chain is not null and (not chain or exists (
            select 1 from duckdb_columns()
            where table_name = 'annotations_quality' and column_name = 'fineweb_chain_line_punct_ratio'
        )),
        'filter_quality: chain := true reads the fineweb_chain_* columns, which quality annotations made before '
        || 'they existed lack; recompute them with `corpusdb annotate DB quality --replace`'
    )
    and require(
        c4_terminal_punct is not null,
        'filter_quality: c4_terminal_punct must be true (C4: only lines ending in terminal punctuation) or false '
        || '(FineWeb: lines kept whatever they end with), not NULL'
    )
    and require_coverage(
        'filter_quality', missing, ['error', 'exclude', 'keep'], n_missing, n_units, docs,
        'quality annotation (documents ingested after it was computed, or `corpusdb annotate` still running?)',
        'annotate them with `corpusdb annotate DB quality` (a re-run annotates only the documents without a row)',
        'missing := ''exclude'' to drop them or missing := ''keep'' to keep them unjudged'
    )
);
