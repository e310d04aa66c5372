-- bench/schema.sql - the tables of the benchmark's "legacy shop" database (scripts/gen-legacy).
--
-- 18 tables, integer serial keys, an `updated_at` change column on most of them (one
-- `timestamp without time zone`), two append-only tables without one, a self-referencing
-- table (category), a foreign-key cycle (warehouse <-> employee, one side DEFERRABLE), and
-- the types a legacy database is made of: numeric with and without typmod, double
-- precision, text with unicode and COPY's special characters, bytea, jsonb, text[] and
-- int[], uuid, inet, interval, char(n), date, timestamptz with 'infinity'.
--
-- Primary keys, NOT NULL, CHECK and UNIQUE constraints are here; foreign keys and the
-- secondary indexes are in bench/constraints.sql. The source gets this file, then its
-- data, then constraints.sql; the destination gets both files before any row arrives.

CREATE TABLE country (
    country_id   serial PRIMARY KEY,
    iso2         char(2) NOT NULL UNIQUE,
    name         text NOT NULL,
    native_name  text,
    phone_prefix varchar(8)
);  -- reference data: no change column

CREATE TABLE currency (
    currency_id serial PRIMARY KEY,
    code        char(3) NOT NULL UNIQUE,
    symbol      text,
    minor_units smallint NOT NULL CHECK (minor_units BETWEEN 0 AND 4),
    updated_at  timestamptz
);

CREATE TABLE region (
    region_id  serial PRIMARY KEY,
    country_id integer NOT NULL,
    name       text NOT NULL,
    tz         text,
    updated_at timestamptz
);

CREATE TABLE warehouse (
    warehouse_id serial PRIMARY KEY,
    region_id    integer NOT NULL,
    name         text NOT NULL,
    manager_id   integer,                 -- -> employee: a foreign-key cycle
    capacity_m3  numeric(12,3),
    opened_on    date,
    updated_at   timestamptz
);

CREATE TABLE employee (
    employee_id  serial PRIMARY KEY,
    warehouse_id integer NOT NULL,
    full_name    text NOT NULL,
    email        text,
    hired_on     date NOT NULL,
    salary       numeric(10,2) CHECK (salary >= 0),
    photo        bytea,
    updated_at   timestamptz
);

CREATE TABLE category (
    category_id serial PRIMARY KEY,
    parent_id   integer,                  -- -> category: references itself
    name        text NOT NULL,
    slug        text NOT NULL UNIQUE,
    updated_at  timestamptz
);

CREATE TABLE supplier (
    supplier_id serial PRIMARY KEY,
    country_id  integer NOT NULL,
    name        text NOT NULL,
    vat_number  text,
    contact     jsonb,
    rating      numeric(3,2) CHECK (rating BETWEEN 0 AND 5),
    is_active   boolean NOT NULL DEFAULT true,
    updated_at  timestamptz
);

CREATE TABLE product (
    product_id      serial PRIMARY KEY,
    supplier_id     integer NOT NULL,
    category_id     integer NOT NULL,
    sku             text NOT NULL UNIQUE,
    name            text NOT NULL,
    description     text,
    price           numeric(12,2) NOT NULL CHECK (price >= 0),
    weight_kg       double precision,
    attrs           jsonb,
    tags            text[],
    thumbnail       bytea,
    discontinued_at timestamptz,
    updated_at      timestamptz
);

CREATE TABLE customer (
    customer_id    serial PRIMARY KEY,
    country_id     integer,
    public_id      uuid NOT NULL UNIQUE,
    email          text NOT NULL,
    full_name      text NOT NULL,
    birth_date     date,
    phone          text,
    balance        numeric(14,4) NOT NULL DEFAULT 0,
    lifetime_value numeric,
    loyalty_points integer,
    prefs          jsonb,
    last_ip        inet,
    is_active      boolean,
    notes          text,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz
);

CREATE TABLE address (
    address_id  serial PRIMARY KEY,
    customer_id integer NOT NULL,
    region_id   integer,
    line1       text NOT NULL,
    line2       text,
    city        text NOT NULL,
    postcode    varchar(16),
    is_default  boolean NOT NULL,
    updated_at  timestamptz
);

CREATE TABLE orders (
    order_id            serial PRIMARY KEY,
    customer_id         integer NOT NULL,
    shipping_address_id integer,
    employee_id         integer,
    currency_id         integer NOT NULL,
    status              text NOT NULL
        CHECK (status IN ('new', 'paid', 'shipped', 'delivered', 'cancelled', 'returned')),
    placed_at           timestamptz NOT NULL,
    total               numeric(14,2) NOT NULL,
    coupon_code         text,
    note                text,
    updated_at          timestamptz
);

CREATE TABLE order_line (
    order_line_id bigserial PRIMARY KEY,
    order_id      integer NOT NULL,
    line_no       smallint NOT NULL,
    product_id    integer NOT NULL,
    quantity      integer NOT NULL CHECK (quantity > 0),
    unit_price    numeric(12,2) NOT NULL,
    discount      numeric(5,4) CHECK (discount BETWEEN 0 AND 1),
    gift_message  text,
    updated_at    timestamptz,
    UNIQUE (order_id, line_no)
);

CREATE TABLE payment (
    payment_id   serial PRIMARY KEY,
    order_id     integer NOT NULL,
    method       text NOT NULL CHECK (method IN ('card', 'transfer', 'paypal', 'cash', 'voucher')),
    amount       numeric(14,2) NOT NULL,
    paid_at      timestamptz,
    provider_ref bytea,
    raw_response jsonb,
    updated_at   timestamptz
);

CREATE TABLE shipment (
    shipment_id    serial PRIMARY KEY,
    order_id       integer NOT NULL,
    warehouse_id   integer NOT NULL,
    carrier        text,
    tracking_no    text,
    shipped_at     timestamptz,
    delivered_at   timestamptz,
    transit        interval,
    parcel_dims_cm integer[],
    updated_at     timestamp without time zone   -- legacy: no time zone
);

CREATE TABLE inventory (
    inventory_id serial PRIMARY KEY,
    product_id   integer NOT NULL,
    warehouse_id integer NOT NULL,
    on_hand      integer NOT NULL,
    reserved     integer NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    bin_code     text,
    last_counted date,
    updated_at   timestamptz,
    UNIQUE (product_id, warehouse_id)
);

CREATE TABLE review (
    review_id     serial PRIMARY KEY,
    product_id    integer NOT NULL,
    customer_id   integer NOT NULL,
    rating        smallint NOT NULL CHECK (rating BETWEEN 1 AND 5),
    title         text,
    body          text,
    helpful_votes integer NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz
);

CREATE TABLE price_history (
    price_history_id bigserial PRIMARY KEY,
    product_id       integer NOT NULL,
    currency_id      integer NOT NULL,
    valid_from       timestamptz NOT NULL,
    valid_to         timestamptz,          -- 'infinity' for the current price
    price            numeric(12,2) NOT NULL
);  -- append-only: no change column

CREATE TABLE audit_log (
    audit_id    bigserial PRIMARY KEY,
    employee_id integer,
    at          timestamptz NOT NULL,
    action      text NOT NULL,
    entity      text,
    payload     jsonb,
    client_addr inet
);  -- append-only, purged from the old end: no change column
