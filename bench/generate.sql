-- bench/generate.sql - the rows of the benchmark's legacy database, generated inside
-- PostgreSQL with generate_series (run by scripts/gen-legacy, after bench/schema.sql and
-- before bench/constraints.sql). psql variables: scale (1 = about 3.5 million rows),
-- seed (for setseed, between -1 and 1).
--
-- The values are the awkward ones a legacy database holds: NULLs almost everywhere they
-- are allowed, empty strings beside NULLs, unicode (accents, Cyrillic, Greek, Arabic,
-- Hebrew, CJK, emoji, combining marks), COPY's special characters (tab, newline,
-- backslash, the text "\N"), numeric NaN and 30-digit values, random doubles, 'infinity'
-- timestamps, bytea with zero bytes, nested jsonb, arrays with NULL elements and quotes,
-- IPv4 and IPv6 addresses, intervals with microseconds. About 1.5% of change columns are
-- NULL, half of the reviews' (the application sets it on edits only).

\set ON_ERROR_STOP 1
SET client_min_messages = warning;
SET max_parallel_workers_per_gather = 0;    -- one process: setseed makes it repeatable
SET synchronous_commit = off;
SELECT setseed(:seed) \g /dev/null

SELECT 250 AS n_country,
       30 AS n_currency,
       greatest(30, round(3000 * :scale))::int AS n_region,
       40 AS n_warehouse,
       greatest(40, round(2000 * :scale))::int AS n_employee,
       greatest(30, round(2000 * :scale))::int AS n_category,
       greatest(20, round(5000 * :scale))::int AS n_supplier,
       greatest(100, round(80000 * :scale))::int AS n_product,
       greatest(100, round(250000 * :scale))::int AS n_customer,
       greatest(140, round(350000 * :scale))::int AS n_address,
       greatest(200, round(500000 * :scale))::int AS n_orders,
       greatest(100, round(160000 * :scale))::int AS n_inventory,
       greatest(100, round(100000 * :scale))::int AS n_review,
       greatest(100, round(100000 * :scale))::int AS n_price_history,
       greatest(100, round(50000 * :scale))::int AS n_audit_log
\gset
-- Orders are placed by the first 90% of the customers only: the others can be deleted.
SELECT greatest(1, floor(:n_customer * 0.9))::int AS n_buyer \gset

-- Words to draw from (one row; every draw is w.ARRAY[1 + floor(random() * n)]).
CREATE TEMP TABLE w AS SELECT
    ARRAY['Anna', 'José', 'Zoë', 'Łukasz', 'Søren', 'François', 'Chloé', 'Ingrid', 'Mehmet',
          'Ayşe', 'Björn', 'Nguyễn', 'Ольга', 'Дмитрий', 'Αθηνά', 'محمد', 'שרה', '王芳',
          '李伟', 'さくら', 'Hiroshi', 'Priya', 'Ngozi', 'Seán', 'Renée', 'Jürgen', 'Ðorđe',
          'María José', 'Jean-Luc', 'O''Neil', 'André', 'Zoe' || chr(776), 'Mary', 'John',
          'Peter', 'Paul', 'Sarah', 'David', 'Laura', 'Tom'] AS firsts,
    ARRAY['Smith', 'Müller', 'García', 'Núñez', 'O''Brien', 'van der Berg', 'Kowalski',
          'Øvergård', 'Dubois', 'Jensen', 'Yılmaz', 'Nakamura', 'Иванов', 'Παπαδόπουλος',
          'علي', 'כהן', '陈', 'Smith-Jones', 'de la Cruz', 'Šimić', 'Ng', 'Łęcki', 'Ahmed',
          'Fernández', 'D''Angelo', 'MacLeod', 'Ó Súilleabháin', 'Pérez', 'Rossi', 'Björk',
          'Brown', 'Taylor', 'Wilson', 'Martin', 'Lee'] AS lasts,
    ARRAY['Berlin', 'München', 'Zürich', 'São Paulo', 'Kraków', 'Århus', 'Malmö', 'İstanbul',
          'Москва', '東京', 'Αθήνα', 'القاهرة', 'Reykjavík', 'Cluj-Napoca', 'Łódź', 'Nice',
          'Bogotá', 'Montréal', 'Köln', 'Genève', 'London', 'Paris', 'Lyon', 'Leeds'] AS cities,
    ARRAY['lorem', 'ipsum', 'dolor', 'sit', 'amet', 'consectetur', 'adipiscing', 'elit',
          'sed', 'do', 'eiusmod', 'tempor', 'ünïcödé', 'naïve', 'café', 'smörgåsbord', 'fjörd',
          'crème', 'brûlée', '日本語', 'текст', 'κείμενο', 'نص', 'טקסט', 'emoji🙂', '👍🏽',
          E'tab\there', E'new\nline', E'carriage\rreturn', E'back\\slash', '\N', 'NULL',
          '"quoted"', 'it''s', 'semi;colon', 'comma,here', '{brace}', '50%', 'a_b', '€9.99',
          'e' || chr(769) || 'te', 'quick', 'brown', 'fox', 'jumps', 'over', 'the', 'lazy',
          'dog', 'and', 'of', 'to', 'in', 'with', 'for', 'on'] AS words;

-- country: reference data, no change column
INSERT INTO country (country_id, iso2, name, native_name, phone_prefix)
SELECT g, chr(65 + (g - 1) / 26) || chr(65 + (g - 1) % 26),
       (ARRAY['Deutschland', 'España', 'Österreich', '日本', 'Россия', 'Ελλάδα', 'مصر',
              'Côte d''Ivoire', 'São Tomé and Príncipe', 'Curaçao', 'Åland', 'Việt Nam'])
           [1 + g % 12] || ' ' || g,
       CASE WHEN g % 4 = 0 THEN NULL WHEN g % 4 = 1 THEN '' ELSE w.cities[1 + g % 24] END,
       CASE WHEN g % 9 = 0 THEN NULL ELSE '+' || (g * 7) % 999 END
FROM generate_series(1, :n_country) g, w;

INSERT INTO currency (currency_id, code, symbol, minor_units, updated_at)
SELECT g, 'X' || chr(65 + g / 26) || chr(65 + g % 26),
       (ARRAY['€', '$', '£', '¥', '₽', '₺', '₹', '₩', 'CHF', NULL, 'zł', 'Kč'])[1 + g % 12],
       (ARRAY[2, 2, 2, 0, 3, 2, 4])[1 + g % 7],
       CASE WHEN g % 10 = 0 THEN NULL
            ELSE timestamptz '2015-01-01 00:00:00+00' + random() * interval '3000 days' END
FROM generate_series(1, :n_currency) g;

INSERT INTO region (region_id, country_id, name, tz, updated_at)
SELECT g, 1 + floor(random() * :n_country)::int,
       w.cities[1 + floor(random() * cardinality(w.cities))::int] || ' region ' || g,
       CASE WHEN random() < 0.2 THEN NULL
            ELSE (ARRAY['Europe/Berlin', 'Asia/Tokyo', 'America/Sao_Paulo', 'UTC', 'Europe/Istanbul'])
                [1 + g % 5] END,
       CASE WHEN random() < 0.015 THEN NULL
            ELSE timestamptz '2014-01-01 00:00:00+00' + random() * interval '4000 days' END
FROM generate_series(1, :n_region) g, w;

INSERT INTO warehouse (warehouse_id, region_id, name, manager_id, capacity_m3, opened_on, updated_at)
SELECT g, 1 + floor(random() * :n_region)::int,
       'Lager ' || w.cities[1 + g % 24] || ' #' || g, NULL,
       CASE WHEN g % 7 = 0 THEN NULL ELSE round((random() * 100000)::numeric, 3) END,
       date '1990-01-01' + floor(random() * 12000)::int,
       timestamptz '2016-01-01 00:00:00+00' + random() * interval '3000 days'
FROM generate_series(1, :n_warehouse) g, w;

INSERT INTO employee (employee_id, warehouse_id, full_name, email, hired_on, salary, photo, updated_at)
SELECT g, 1 + floor(random() * :n_warehouse)::int, fn || ' ' || ln,
       CASE WHEN random() < 0.1 THEN NULL ELSE 'e' || g || '@corp.example' END,
       date '1995-01-01' + floor(random() * 10000)::int,
       CASE WHEN random() < 0.05 THEN NULL ELSE round((20000 + random() * 100000)::numeric, 2) END,
       CASE WHEN random() < 0.5 THEN NULL
            ELSE '\x0000ff'::bytea || decode(repeat(md5('photo' || g), 16), 'hex') END,
       CASE WHEN random() < 0.015 THEN NULL
            ELSE timestamptz '2016-01-01 00:00:00+00' + random() * interval '3000 days' END
FROM (SELECT g, w.firsts[1 + floor(random() * cardinality(w.firsts))::int] AS fn,
             w.lasts[1 + floor(random() * cardinality(w.lasts))::int] AS ln
      FROM generate_series(1, :n_employee) g, w) s;

-- the cycle: each warehouse gets a manager
UPDATE warehouse SET manager_id = 1 + (warehouse_id * 13) % :n_employee
WHERE warehouse_id % 5 <> 0;

-- category: a tree, each parent before its children
INSERT INTO category (category_id, parent_id, name, slug, updated_at)
SELECT g, CASE WHEN g <= 20 THEN NULL ELSE 1 + floor(random() * (g - 1))::int END,
       initcap(w.words[1 + floor(random() * cardinality(w.words))::int]) || ' '
           || w.words[1 + floor(random() * cardinality(w.words))::int],
       'cat-' || g,
       CASE WHEN random() < 0.015 THEN NULL
            ELSE timestamptz '2014-01-01 00:00:00+00' + random() * interval '4000 days' END
FROM generate_series(1, :n_category) g, w;

INSERT INTO supplier (supplier_id, country_id, name, vat_number, contact, rating, is_active, updated_at)
SELECT g, 1 + floor(random() * :n_country)::int,
       ln || ' ' || (ARRAY['GmbH', 'S.A.', 'Ltd.', 'K.K.', 'ООО', 'A/S', '& Söhne', 'S.à r.l.'])[1 + g % 8],
       CASE WHEN random() < 0.3 THEN NULL ELSE 'DE' || lpad((g::bigint * 7919 % 1000000000)::text, 9, '0') END,
       CASE WHEN random() < 0.2 THEN NULL
            ELSE jsonb_build_object('name', fn || ' ' || ln, 'phone', '+49 30 ' || g,
                     'emails', jsonb_build_array('a' || g || '@s.example', NULL),
                     'address', jsonb_build_object('city', w.cities[1 + g % 24], 'zip', NULL)) END,
       CASE WHEN random() < 0.2 THEN NULL ELSE round((random() * 5)::numeric, 2) END,
       g % 17 <> 0,
       CASE WHEN random() < 0.015 THEN NULL
            ELSE timestamptz '2014-01-01 00:00:00+00' + random() * interval '4000 days' END
FROM (SELECT g, w.firsts[1 + floor(random() * cardinality(w.firsts))::int] AS fn,
             w.lasts[1 + floor(random() * cardinality(w.lasts))::int] AS ln
      FROM generate_series(1, :n_supplier) g, w) s, w;

INSERT INTO product (product_id, supplier_id, category_id, sku, name, description, price,
                     weight_kg, attrs, tags, thumbnail, discontinued_at, updated_at)
SELECT g, 1 + floor(random() * :n_supplier)::int, 1 + floor(random() * :n_category)::int,
       'SKU-' || lpad(g::text, 8, '0'),
       initcap(w1) || ' ' || w2 || ' ' || g,
       CASE WHEN random() < 0.1 THEN NULL WHEN g % 50 = 0 THEN ''
            ELSE (SELECT string_agg(w.words[1 + floor(random() * cardinality(w.words))::int + 0 * i], ' ')
                  FROM generate_series(1, 5 + g % 25) i) END,
       round((random() * random() * 2000)::numeric, 2),
       CASE WHEN random() < 0.1 THEN NULL ELSE random() * 50 END,
       CASE WHEN random() < 0.15 THEN NULL
            ELSE jsonb_build_object('color', (ARRAY['red', 'grün', 'bleu', '黒', NULL])[1 + g % 5],
                     'size', (ARRAY['S', 'M', 'L', 'XL'])[1 + g % 4],
                     'dims', jsonb_build_array(g % 100, round((random() * 10)::numeric, 1), NULL),
                     'eco', g % 3 = 0, 'note', w2) END,
       CASE WHEN random() < 0.3 THEN NULL WHEN g % 11 = 0 THEN '{}'::text[]
            ELSE ARRAY[w1, w2, CASE WHEN g % 7 = 0 THEN NULL ELSE 'tag' || g % 100 END] END,
       CASE WHEN random() < 0.3 THEN NULL
            ELSE '\x00'::bytea || decode(repeat(md5('thumb' || g), 1 + g % 8), 'hex') END,
       CASE WHEN random() < 0.9 THEN NULL WHEN g % 5 = 0 THEN 'infinity'::timestamptz
            ELSE timestamptz '2018-01-01 00:00:00+00' + random() * interval '2000 days' END,
       CASE WHEN random() < 0.015 THEN NULL
            ELSE timestamptz '2016-01-01 00:00:00+00' + random() * interval '3400 days' END
FROM (SELECT g, w.words[1 + floor(random() * cardinality(w.words))::int] AS w1,
             w.words[1 + floor(random() * cardinality(w.words))::int] AS w2
      FROM generate_series(1, :n_product) g, w) s, w;

INSERT INTO customer (customer_id, country_id, public_id, email, full_name, birth_date, phone,
                      balance, lifetime_value, loyalty_points, prefs, last_ip, is_active, notes,
                      created_at, updated_at)
SELECT g,
       CASE WHEN r1 < 0.02 THEN NULL ELSE 1 + (g::bigint * 7919) % :n_country END,
       md5('customer' || g)::uuid,
       CASE WHEN r2 < 0.01 THEN lower(fn) || '.' || g || '@exämple.com'
            WHEN r2 < 0.05 THEN upper(left(ln, 1)) || g || '@Example.COM'
            ELSE 'user' || g || '@example.com' END,
       fn || ' ' || ln,
       CASE WHEN random() < 0.3 THEN NULL ELSE date '1930-01-01' + floor(random() * 27000)::int END,
       CASE WHEN random() < 0.4 THEN NULL
            WHEN r1 < 0.7 THEN '+49 ' || (100000000 + floor(random() * 899999999))::bigint
            ELSE '(555) ' || lpad((g % 10000)::text, 4, '0') || ' ext. ' || g % 100 END,
       round((random() * 2000 - 500)::numeric, 4),
       CASE WHEN g % 997 = 0 THEN 'NaN'::numeric
            WHEN g % 101 = 0 THEN NULL
            WHEN g % 89 = 0 THEN 123456789012345678901234.567890123 * g
            WHEN g % 83 = 0 THEN 1e-20 * g
            ELSE round((random() * 10000)::numeric, 2 + g % 5) END,
       CASE WHEN random() < 0.5 THEN NULL ELSE floor(random() * 100000)::int END,
       CASE WHEN random() < 0.4 THEN NULL
            ELSE jsonb_build_object('lang', (ARRAY['de', 'en', 'fr', 'ja', 'ru'])[1 + g % 5],
                     'newsletter', g % 3 = 0, 'tags', jsonb_build_array(w1, w2),
                     'score', round((random() * 10)::numeric, 3)) END,
       CASE WHEN random() < 0.3 THEN NULL
            WHEN g % 10 = 0 THEN ('2001:db8::' || to_hex(g >> 16) || ':' || to_hex(g & 65535))::inet
            ELSE ('10.' || (g >> 16) % 256 || '.' || (g >> 8) % 256 || '.' || g % 256)::inet END,
       CASE WHEN g % 50 = 0 THEN NULL ELSE g % 7 <> 0 END,
       CASE WHEN r1 < 0.8 THEN NULL WHEN g % 2 = 0 THEN ''
            ELSE w1 || ' ' || w2 || E'\n' || w2 || E'\t' || g END,
       created,
       CASE WHEN random() < 0.015 THEN NULL
            ELSE least(created + random() * interval '900 days',
                       timestamptz '2025-06-30 23:59:59.999999+00') END
FROM (SELECT g, random() AS r1, random() AS r2,
             w.firsts[1 + floor(random() * cardinality(w.firsts))::int] AS fn,
             w.lasts[1 + floor(random() * cardinality(w.lasts))::int] AS ln,
             w.words[1 + floor(random() * cardinality(w.words))::int] AS w1,
             w.words[1 + floor(random() * cardinality(w.words))::int] AS w2,
             timestamptz '2012-01-01 00:00:00+00' + random() * interval '4500 days' AS created
      FROM generate_series(1, :n_customer) g, w) s;

-- address g belongs to customer ((g - 1) % n_customer) + 1: customer c's first address is c
INSERT INTO address (address_id, customer_id, region_id, line1, line2, city, postcode, is_default, updated_at)
SELECT g, (g - 1) % :n_customer + 1,
       CASE WHEN random() < 0.1 THEN NULL ELSE 1 + floor(random() * :n_region)::int END,
       (1 + g % 300) || ' ' || initcap(w.words[1 + floor(random() * cardinality(w.words))::int])
           || (ARRAY[' Straße', ' Street', ' rue', 'gatan', ' улица'])[1 + g % 5],
       CASE WHEN random() < 0.7 THEN NULL WHEN g % 3 = 0 THEN '' ELSE 'Apt. ' || g % 40 || '½' END,
       w.cities[1 + floor(random() * cardinality(w.cities))::int],
       CASE WHEN random() < 0.05 THEN NULL ELSE lpad((g * 31 % 99999)::text, 5, '0') END,
       g <= :n_customer,
       CASE WHEN random() < 0.015 THEN NULL
            ELSE timestamptz '2012-01-01 00:00:00+00' + random() * interval '4900 days' END
FROM generate_series(1, :n_address) g, w;

-- orders: by the first 90% of the customers, shipped to their first address
INSERT INTO orders (order_id, customer_id, shipping_address_id, employee_id, currency_id, status,
                    placed_at, total, coupon_code, note, updated_at)
SELECT g, c, CASE WHEN random() < 0.05 THEN NULL ELSE c END,
       CASE WHEN random() < 0.6 THEN NULL ELSE 1 + floor(random() * :n_employee)::int END,
       1 + floor(random() * random() * :n_currency)::int,
       (ARRAY['delivered', 'delivered', 'delivered', 'shipped', 'paid', 'new', 'cancelled', 'returned'])
           [1 + floor(random() * 8)::int],
       placed,
       round((random() * random() * 3000)::numeric, 2),
       CASE WHEN random() < 0.9 THEN NULL ELSE upper(md5('c' || g % 500)) END,
       CASE WHEN random() < 0.95 THEN NULL
            ELSE w.words[1 + floor(random() * cardinality(w.words))::int] || ' ' ||
                 w.words[1 + floor(random() * cardinality(w.words))::int] END,
       CASE WHEN random() < 0.01 THEN NULL
            ELSE least(placed + random() * interval '30 days', timestamptz '2025-06-30 23:59:59+00') END
FROM (SELECT g, 1 + floor(random() * :n_buyer)::int AS c,
             timestamptz '2015-01-01 00:00:00+00' + random() * interval '3800 days' AS placed
      FROM generate_series(1, :n_orders) g) s, w;

-- order lines: 1 to 4 per order (2.4 on average), numbered 1..k, consecutive ids
INSERT INTO order_line (order_id, line_no, product_id, quantity, unit_price, discount,
                        gift_message, updated_at)
SELECT o.order_id, l, 1 + floor(random() * :n_product)::int,
       1 + floor(random() * random() * 20)::int,
       round((random() * random() * 500)::numeric, 2),
       CASE WHEN random() < 0.7 THEN NULL ELSE round((random() * 0.5)::numeric, 4) END,
       CASE WHEN random() < 0.97 THEN NULL
            ELSE 'Alles Gute! 🎉 ' || w.words[1 + floor(random() * cardinality(w.words))::int] END,
       CASE WHEN o.updated_at IS NULL THEN NULL ELSE o.updated_at - random() * interval '1 hour' END
FROM (SELECT order_id, updated_at, 1 + floor(random() * 3.8)::int AS k FROM orders) o,
     generate_series(1, o.k) l, w
ORDER BY o.order_id, l;

-- payments: 80% of the orders
INSERT INTO payment (order_id, method, amount, paid_at, provider_ref, raw_response, updated_at)
SELECT o.order_id,
       (ARRAY['card', 'card', 'card', 'paypal', 'transfer', 'cash', 'voucher'])[1 + floor(random() * 7)::int],
       o.total,
       CASE WHEN random() < 0.1 THEN NULL ELSE o.placed_at + random() * interval '2 days' END,
       CASE WHEN random() < 0.2 THEN NULL
            ELSE decode(md5('pay' || o.order_id) || '00' || md5(o.order_id::text), 'hex') END,
       CASE WHEN random() < 0.5 THEN NULL
            ELSE jsonb_build_object('id', 'ch_' || md5(o.order_id::text), 'ok', random() < 0.95,
                     'amount', o.total, 'meta', jsonb_build_object('ip', '10.0.0.' || o.order_id % 256,
                     'ua', 'Mozilla/5.0 (X11; Linux x86_64) “smart quotes”', 'retries', NULL)) END,
       o.updated_at
FROM orders o
WHERE random() < 0.8
ORDER BY o.order_id;

-- shipments: 60% of the orders
INSERT INTO shipment (order_id, warehouse_id, carrier, tracking_no, shipped_at, delivered_at,
                      transit, parcel_dims_cm, updated_at)
SELECT order_id, 1 + floor(random() * :n_warehouse)::int,
       (ARRAY['DHL', 'UPS', 'La Poste', 'Деловые Линии', 'ヤマト運輸', NULL])[1 + floor(random() * 6)::int],
       CASE WHEN random() < 0.1 THEN NULL ELSE 'JJD' || lpad((order_id::bigint * 7919)::text, 14, '0') END,
       shipped, delivered, delivered - shipped,
       CASE WHEN random() < 0.2 THEN NULL
            WHEN order_id % 13 = 0 THEN ARRAY[10, NULL, 30]
            ELSE ARRAY[10 + order_id % 90, 5 + order_id % 40, 1 + order_id % 25] END,
       (upd AT TIME ZONE 'UTC')
FROM (SELECT order_id, placed_at + random() * interval '3 days' AS shipped, updated_at AS upd
      FROM orders WHERE random() < 0.6) o,
     LATERAL (SELECT CASE WHEN random() < 0.2 THEN NULL
                          ELSE o.shipped + random() * interval '9 days' END AS delivered) d
ORDER BY order_id;

-- inventory: (product, warehouse) pairs, unique
INSERT INTO inventory (inventory_id, product_id, warehouse_id, on_hand, reserved, bin_code,
                       last_counted, updated_at)
SELECT g, (g - 1) % :n_product + 1, ((g - 1) / :n_product) % :n_warehouse + 1,
       floor(random() * 1000)::int - 5, floor(random() * 10)::int,
       CASE WHEN random() < 0.2 THEN NULL ELSE chr(65 + g % 26) || '-' || g % 100 || '-' || g % 7 END,
       CASE WHEN random() < 0.3 THEN NULL ELSE date '2020-01-01' + floor(random() * 2000)::int END,
       CASE WHEN random() < 0.015 THEN NULL
            ELSE timestamptz '2020-01-01 00:00:00+00' + random() * interval '2000 days' END
FROM generate_series(1, :n_inventory) g;

-- reviews: updated_at is set on edits only
INSERT INTO review (review_id, product_id, customer_id, rating, title, body, helpful_votes,
                    created_at, updated_at)
SELECT g, 1 + floor(random() * :n_product)::int, 1 + floor(random() * :n_buyer)::int,
       (ARRAY[5, 5, 5, 4, 4, 3, 2, 1])[1 + floor(random() * 8)::int],
       CASE WHEN random() < 0.3 THEN NULL ELSE initcap(w1) || '!' END,
       CASE WHEN random() < 0.2 THEN NULL WHEN g % 40 = 0 THEN ''
            ELSE w1 || ' ' || w2 || '. ' || w2 || E'\n\n' || w1 || ' — ' || g END,
       floor(random() * random() * 50)::int,
       created,
       CASE WHEN random() < 0.5 THEN NULL
            ELSE least(created + random() * interval '100 days', timestamptz '2025-06-30 00:00:00+00') END
FROM (SELECT g, w.words[1 + floor(random() * cardinality(w.words))::int] AS w1,
             w.words[1 + floor(random() * cardinality(w.words))::int] AS w2,
             timestamptz '2016-01-01 00:00:00+00' + random() * interval '3300 days' AS created
      FROM generate_series(1, :n_review) g, w) s;

INSERT INTO price_history (price_history_id, product_id, currency_id, valid_from, valid_to, price)
SELECT g, (g - 1) % :n_product + 1, 1 + floor(random() * 3)::int, f,
       CASE WHEN random() < 0.3 THEN 'infinity'::timestamptz ELSE f + random() * interval '400 days' END,
       round((random() * 999)::numeric, 2)
FROM (SELECT g, timestamptz '2015-01-01 00:00:00+00' + random() * interval '3500 days' AS f
      FROM generate_series(1, :n_price_history) g) s;

INSERT INTO audit_log (audit_id, employee_id, at, action, entity, payload, client_addr)
SELECT g, CASE WHEN random() < 0.2 THEN NULL ELSE 1 + floor(random() * :n_employee)::int END,
       timestamptz '2021-01-01 00:00:00+00' + g * (interval '1500 days' / :n_audit_log)
           + random() * interval '1 minute',
       (ARRAY['login', 'logout', 'update', 'delete', 'export', 'refund'])[1 + floor(random() * 6)::int],
       CASE WHEN random() < 0.1 THEN NULL ELSE (ARRAY['orders', 'customer', 'product'])[1 + g % 3] END,
       CASE WHEN random() < 0.3 THEN NULL
            ELSE jsonb_build_object('before', jsonb_build_object('status', 'new', 'n', g),
                     'after', jsonb_build_object('status', 'paid', 'comment', w.words[1 + g % 50]),
                     'list', jsonb_build_array(1, 'two', NULL, jsonb_build_object('x', g % 10))) END,
       CASE WHEN random() < 0.5 THEN NULL ELSE ('192.168.' || g % 256 || '.' || (g >> 8) % 256)::inet END
FROM generate_series(1, :n_audit_log) g, w;

-- the serial sequences continue after the generated keys
SELECT setval(pg_get_serial_sequence(c.relname, a.attname),
              greatest(1, (xpath('/row/m/text()',
                  query_to_xml(format('SELECT max(%I) AS m FROM %I', a.attname, c.relname), false, true, '')))[1]::text::bigint))
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0
WHERE c.relkind = 'r' AND pg_get_serial_sequence(c.relname, a.attname) IS NOT NULL
\g /dev/null
