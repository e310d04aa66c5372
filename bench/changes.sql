-- bench/changes.sql - about 1% of the rows of the legacy database change, as between two
-- runs of a migration (scripts/gen-legacy --changes). psql variable: seed.
--
-- Every key touched is listed in bench_meta.changes (tbl, id, kind), kind being:
--   update         updated, updated_at set to now()
--   silent         updated without touching updated_at (a batch fix, a table without one)
--   insert         inserted with updated_at (or into a table without a change column)
--   silent_insert  inserted with updated_at NULL (reviews: set on edits only)
--   delete         deleted, directly or by ON DELETE CASCADE
-- An incremental run cannot see the silent ones nor the deletes; a full run sees all.
-- bench_meta is in the source only: dm-entities skips tables the destination lacks.

\set ON_ERROR_STOP 1
SET client_min_messages = warning;
SET max_parallel_workers_per_gather = 0;
SELECT setseed(:seed / 2) \g /dev/null

CREATE SCHEMA IF NOT EXISTS bench_meta;
CREATE TABLE IF NOT EXISTS bench_meta.changes (tbl text NOT NULL, id bigint NOT NULL, kind text NOT NULL);

SELECT max(customer_id) AS n_customer, floor(max(customer_id) * 0.9)::int AS n_buyer
FROM customer \gset
SELECT max(product_id) AS n_product FROM product \gset
SELECT max(employee_id) AS n_employee FROM employee \gset
SELECT max(warehouse_id) AS n_warehouse FROM warehouse \gset

-- ---------------------------------------------------------------- deletes
-- orders, with their lines, payments and shipments (ON DELETE CASCADE)
CREATE TEMP TABLE del_orders AS SELECT order_id FROM orders WHERE random() < 0.001;
INSERT INTO bench_meta.changes
SELECT 'order_line', order_line_id, 'delete' FROM order_line WHERE order_id IN (SELECT order_id FROM del_orders)
UNION ALL SELECT 'payment', payment_id, 'delete' FROM payment WHERE order_id IN (SELECT order_id FROM del_orders)
UNION ALL SELECT 'shipment', shipment_id, 'delete' FROM shipment WHERE order_id IN (SELECT order_id FROM del_orders)
UNION ALL SELECT 'orders', order_id, 'delete' FROM del_orders;
DELETE FROM orders WHERE order_id IN (SELECT order_id FROM del_orders);

-- customers who never ordered nor reviewed, with their addresses (cascade)
CREATE TEMP TABLE del_customers AS
SELECT customer_id FROM customer c
WHERE customer_id > :n_buyer AND random() < 0.01
  AND NOT EXISTS (SELECT FROM orders o WHERE o.customer_id = c.customer_id)
  AND NOT EXISTS (SELECT FROM review r WHERE r.customer_id = c.customer_id)
  AND NOT EXISTS (SELECT FROM orders o JOIN address a ON a.address_id = o.shipping_address_id
                  WHERE a.customer_id = c.customer_id);
INSERT INTO bench_meta.changes
SELECT 'address', address_id, 'delete' FROM address WHERE customer_id IN (SELECT customer_id FROM del_customers)
UNION ALL SELECT 'customer', customer_id, 'delete' FROM del_customers;
DELETE FROM customer WHERE customer_id IN (SELECT customer_id FROM del_customers);

WITH d AS (DELETE FROM order_line WHERE random() < 0.0005 RETURNING order_line_id)
INSERT INTO bench_meta.changes SELECT 'order_line', order_line_id, 'delete' FROM d;
WITH d AS (DELETE FROM inventory WHERE random() < 0.001 RETURNING inventory_id)
INSERT INTO bench_meta.changes SELECT 'inventory', inventory_id, 'delete' FROM d;
WITH d AS (DELETE FROM review WHERE random() < 0.002 RETURNING review_id)
INSERT INTO bench_meta.changes SELECT 'review', review_id, 'delete' FROM d;
-- the retention purge of the log: its oldest 0.5%
WITH d AS (DELETE FROM audit_log
           WHERE audit_id < (SELECT min(audit_id) + ceil(count(*) * 0.005) FROM audit_log)
           RETURNING audit_id)
INSERT INTO bench_meta.changes SELECT 'audit_log', audit_id, 'delete' FROM d;

-- ---------------------------------------------------------------- updates (updated_at = now())
WITH u AS (UPDATE customer SET balance = balance - 9.99, email = 'new.' || email,
                               prefs = coalesce(prefs, '{}') || '{"newsletter": true, "note": "réinscrit ✓"}',
                               updated_at = now()
           WHERE random() < 0.008 RETURNING customer_id)
INSERT INTO bench_meta.changes SELECT 'customer', customer_id, 'update' FROM u;
WITH u AS (UPDATE address SET line2 = coalesce(line2, '') || E' (2. OG)\t', updated_at = now()
           WHERE random() < 0.005 RETURNING address_id)
INSERT INTO bench_meta.changes SELECT 'address', address_id, 'update' FROM u;
WITH u AS (UPDATE orders SET status = CASE status WHEN 'new' THEN 'paid' WHEN 'paid' THEN 'shipped'
                                                  ELSE 'delivered' END,
                             total = total + 1, updated_at = now()
           WHERE random() < 0.01 RETURNING order_id)
INSERT INTO bench_meta.changes SELECT 'orders', order_id, 'update' FROM u;
WITH u AS (UPDATE order_line SET quantity = quantity + 1,
                                 product_id = 1 + floor(random() * :n_product)::int, updated_at = now()
           WHERE random() < 0.005 RETURNING order_line_id)
INSERT INTO bench_meta.changes SELECT 'order_line', order_line_id, 'update' FROM u;
WITH u AS (UPDATE payment SET paid_at = coalesce(paid_at, now()) + interval '1 second', updated_at = now()
           WHERE random() < 0.005 RETURNING payment_id)
INSERT INTO bench_meta.changes SELECT 'payment', payment_id, 'update' FROM u;
WITH u AS (UPDATE shipment SET delivered_at = coalesce(shipped_at, now()) + interval '2 days 3 hours',
                               transit = interval '2 days 3 hours',
                               updated_at = now() AT TIME ZONE 'UTC'
           WHERE random() < 0.01 RETURNING shipment_id)
INSERT INTO bench_meta.changes SELECT 'shipment', shipment_id, 'update' FROM u;
CREATE TEMP TABLE repriced AS
WITH u AS (UPDATE product SET price = round(price * 1.07, 2), updated_at = now()
           WHERE random() < 0.01 RETURNING product_id, price)
SELECT * FROM u;
INSERT INTO bench_meta.changes SELECT 'product', product_id, 'update' FROM repriced;
WITH u AS (UPDATE inventory SET on_hand = on_hand - 1, updated_at = now()
           WHERE random() < 0.02 RETURNING inventory_id)
INSERT INTO bench_meta.changes SELECT 'inventory', inventory_id, 'update' FROM u;
WITH u AS (UPDATE review SET helpful_votes = helpful_votes + 1, body = coalesce(body, '') || ' (edited)',
                             updated_at = now()
           WHERE random() < 0.005 RETURNING review_id)
INSERT INTO bench_meta.changes SELECT 'review', review_id, 'update' FROM u;
WITH u AS (UPDATE supplier SET rating = 4.5, updated_at = now() WHERE random() < 0.01 RETURNING supplier_id)
INSERT INTO bench_meta.changes SELECT 'supplier', supplier_id, 'update' FROM u;
WITH u AS (UPDATE category SET name = name || ' ★', updated_at = now() WHERE random() < 0.01 RETURNING category_id)
INSERT INTO bench_meta.changes SELECT 'category', category_id, 'update' FROM u;
WITH u AS (UPDATE region SET tz = 'Europe/Paris', updated_at = now() WHERE random() < 0.01 RETURNING region_id)
INSERT INTO bench_meta.changes SELECT 'region', region_id, 'update' FROM u;
WITH u AS (UPDATE warehouse SET capacity_m3 = coalesce(capacity_m3, 0) + 0.5, updated_at = now()
           WHERE warehouse_id % 20 = 3 RETURNING warehouse_id)
INSERT INTO bench_meta.changes SELECT 'warehouse', warehouse_id, 'update' FROM u;
WITH u AS (UPDATE currency SET symbol = '€', updated_at = now() WHERE currency_id = 7 RETURNING currency_id)
INSERT INTO bench_meta.changes SELECT 'currency', currency_id, 'update' FROM u;

-- ---------------------------------------------------------------- silent updates
WITH u AS (UPDATE customer SET phone = regexp_replace(coalesce(phone, ''), '[^0-9+]', '', 'g')
           WHERE random() < 0.001 RETURNING customer_id)
INSERT INTO bench_meta.changes SELECT 'customer', customer_id, 'silent' FROM u;
WITH u AS (UPDATE orders SET note = 'checked by batch job' WHERE random() < 0.001 RETURNING order_id)
INSERT INTO bench_meta.changes SELECT 'orders', order_id, 'silent' FROM u;
WITH u AS (UPDATE order_line SET gift_message = E'Frohe Weihnachten!\n— Oma' WHERE random() < 0.001
           RETURNING order_line_id)
INSERT INTO bench_meta.changes SELECT 'order_line', order_line_id, 'silent' FROM u;
WITH u AS (UPDATE product SET weight_kg = weight_kg * 1.000001 + 0.001 WHERE random() < 0.002
           RETURNING product_id)
INSERT INTO bench_meta.changes SELECT 'product', product_id, 'silent' FROM u;
WITH u AS (UPDATE employee SET salary = coalesce(salary, 30000) + 100 WHERE random() < 0.01
           RETURNING employee_id)
INSERT INTO bench_meta.changes SELECT 'employee', employee_id, 'silent' FROM u;
WITH u AS (UPDATE country SET native_name = 'Česko' WHERE country_id IN (3, 77) RETURNING country_id)
INSERT INTO bench_meta.changes SELECT 'country', country_id, 'silent' FROM u;
WITH u AS (UPDATE price_history SET valid_to = now() WHERE valid_to = 'infinity' AND random() < 0.015
           RETURNING price_history_id)
INSERT INTO bench_meta.changes SELECT 'price_history', price_history_id, 'silent' FROM u;

-- ---------------------------------------------------------------- inserts
CREATE TEMP TABLE new_customers AS
WITH i AS (
    INSERT INTO customer (country_id, public_id, email, full_name, birth_date, balance,
                          lifetime_value, prefs, last_ip, is_active, notes, created_at, updated_at)
    SELECT 1 + g % 200, md5('new customer ' || g || random())::uuid, 'neu' || g || '@exämple.de',
           'Neuer Kunde ' || g || ' 🆕', NULL, 0, CASE WHEN g % 3 = 0 THEN 'NaN'::numeric END,
           '{"lang": "de"}', '::1', true, E'signed up\tonline', now(), now()
    FROM generate_series(1, ceil(:n_customer * 0.002)::int) g
    RETURNING customer_id)
SELECT customer_id FROM i;
INSERT INTO bench_meta.changes SELECT 'customer', customer_id, 'insert' FROM new_customers;
WITH i AS (INSERT INTO address (customer_id, line1, city, postcode, is_default, updated_at)
           SELECT customer_id, 'Neue Straße ' || customer_id % 100, 'Köln', '50667', true, now()
           FROM new_customers RETURNING address_id)
INSERT INTO bench_meta.changes SELECT 'address', address_id, 'insert' FROM i;

CREATE TEMP TABLE new_orders AS
WITH buyers AS (
    SELECT customer_id FROM new_customers
    UNION ALL
    SELECT 1 + floor(random() * :n_buyer)::int FROM generate_series(1, (SELECT ceil(count(*) * 0.003)::int FROM orders))
), i AS (
    INSERT INTO orders (customer_id, shipping_address_id, currency_id, status, placed_at, total, updated_at)
    SELECT b.customer_id, (SELECT min(address_id) FROM address a WHERE a.customer_id = b.customer_id),
           1, 'new', now(), 42.00, now()
    FROM buyers b
    WHERE EXISTS (SELECT FROM customer c WHERE c.customer_id = b.customer_id)
    RETURNING order_id)
SELECT order_id FROM i;
INSERT INTO bench_meta.changes SELECT 'orders', order_id, 'insert' FROM new_orders;
WITH i AS (INSERT INTO order_line (order_id, line_no, product_id, quantity, unit_price, updated_at)
           SELECT order_id, l, 1 + (order_id * 31 + l) % :n_product, l, 9.99 * l, now()
           FROM new_orders, generate_series(1, 1 + order_id % 4) l
           ORDER BY order_id, l
           RETURNING order_line_id)
INSERT INTO bench_meta.changes SELECT 'order_line', order_line_id, 'insert' FROM i;
WITH i AS (INSERT INTO payment (order_id, method, amount, paid_at, provider_ref, updated_at)
           SELECT order_id, 'card', 42.00, now(), '\x00ff00'::bytea, now() FROM new_orders
           WHERE order_id % 5 <> 0 ORDER BY order_id
           RETURNING payment_id)
INSERT INTO bench_meta.changes SELECT 'payment', payment_id, 'insert' FROM i;
WITH i AS (INSERT INTO shipment (order_id, warehouse_id, carrier, shipped_at, parcel_dims_cm, updated_at)
           SELECT order_id, 1 + order_id % :n_warehouse, 'DHL', now(), '{20,20,NULL}', now() AT TIME ZONE 'UTC'
           FROM new_orders WHERE order_id % 3 = 0 ORDER BY order_id
           RETURNING shipment_id)
INSERT INTO bench_meta.changes SELECT 'shipment', shipment_id, 'insert' FROM i;

CREATE TEMP TABLE new_products AS
WITH i AS (INSERT INTO product (supplier_id, category_id, sku, name, price, tags, attrs, updated_at)
           SELECT 1, 1, 'SKU-NEW-' || g || '-' || md5(random()::text), 'Neuheit ' || g || ' ✨', 19.99,
                  '{neu,"mit Leerzeichen",NULL}', '{"new": true}', now()
           FROM generate_series(1, ceil(:n_product * 0.002)::int) g
           RETURNING product_id)
SELECT product_id FROM i;
INSERT INTO bench_meta.changes SELECT 'product', product_id, 'insert' FROM new_products;
WITH i AS (INSERT INTO inventory (product_id, warehouse_id, on_hand, updated_at)
           SELECT product_id, 1, 100, now() FROM new_products RETURNING inventory_id)
INSERT INTO bench_meta.changes SELECT 'inventory', inventory_id, 'insert' FROM i;
WITH i AS (INSERT INTO price_history (product_id, currency_id, valid_from, valid_to, price)
           SELECT product_id, 1, now(), 'infinity', price FROM repriced ORDER BY product_id
           RETURNING price_history_id)
INSERT INTO bench_meta.changes SELECT 'price_history', price_history_id, 'insert' FROM i;
WITH i AS (INSERT INTO review (product_id, customer_id, rating, title, body, created_at, updated_at)
           SELECT 1 + floor(random() * :n_product)::int, 1 + floor(random() * :n_buyer)::int, 5,
                  'Top!', 'Sehr gut 👍', now(), NULL
           FROM generate_series(1, (SELECT ceil(count(*) * 0.005)::int FROM review))
           RETURNING review_id)
INSERT INTO bench_meta.changes SELECT 'review', review_id, 'silent_insert' FROM i;
WITH i AS (INSERT INTO audit_log (employee_id, at, action, entity, payload)
           SELECT 1 + g % :n_employee, now(), 'update', 'orders', jsonb_build_object('n', g, 'ü', 'ß')
           FROM generate_series(1, (SELECT ceil(count(*) * 0.01)::int FROM audit_log)) g
           RETURNING audit_id)
INSERT INTO bench_meta.changes SELECT 'audit_log', audit_id, 'insert' FROM i;
