-- Runs fine by default. With --vars '{fail: true}' the cast below fails
-- inside DuckDB at run time (a database error), so dbt exits with code 1.
-- Materialized as a table: creating a view would not evaluate the cast.
{{ config(materialized='table') }}

select
    {% if var('fail', false) %} cast('x' as integer) {% else %} 1 {% endif %} as ok
