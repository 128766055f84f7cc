-- purpose: filter_length's check on its bounds: 0 <= min_bytes <= max_bytes (max_bytes NULL: no upper bound)
-- depends: require
-- params: min_bytes; max_bytes
-- filter_length runs it; so does a distributed selection (`corpusdb select`) on the driver, with the same words.
create or replace macro filter_length_checks(min_bytes, max_bytes) as (
    require(
        min_bytes >= 0 and (max_bytes is null or max_bytes >= min_bytes),
        'filter_length: need 0 <= min_bytes <= max_bytes, not min_bytes ' || coalesce(min_bytes::varchar, 'NULL')
        || ', max_bytes ' || coalesce(max_bytes::varchar, 'NULL')
    )
);
