-- Singular test: returns the failing rows (orders with a negative amount).
select order_id, amount
from {{ ref('orders') }}
where amount < 0
