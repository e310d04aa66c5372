-- examples/pagila/modern.sql - Pagila redesigned the way a new Supabase project would
-- hold it: the destination of examples/pagila/pagila.conf.
--
-- Run it as app_owner (not a superuser), after roles.sql, in an empty database:
--
--   psql -X -v ON_ERROR_STOP=1 -d 'dbname=modern user=app_owner' -f examples/pagila/modern.sql
--
-- Re-running it drops and recreates everything it made (the data too).
--
-- What changed from Pagila (public.* in the legacy database):
--   * plural table names: actor -> actors, staff -> staff_members, inventory ->
--     inventory_items, ...;
--   * every table has "id uuid PRIMARY KEY DEFAULT gen_random_uuid()" (join tables too:
--     dm needs a single-column primary key in the destination);
--     dm fills id with a deterministic UUID (version 5) computed from the legacy key, and
--     rows the application creates get a random one;
--   * some tables keep the legacy integer key in "legacy_id integer UNIQUE" (countries,
--     cities, addresses, films, stores, staff_members, customers, rentals); the others
--     (languages, categories, actors, film_actors, film_categories, inventory_items,
--     payments) do not, and dm records the pairs in its ledger, dm.ledger;
--   * foreign keys are uuid columns pointing at the new tables;
--   * created_at and updated_at timestamptz NOT NULL DEFAULT now() everywhere, and a
--     trigger that sets updated_at on every update;
--   * every timestamp is a timestamptz (Pagila's are timestamp without time zone);
--   * renamed columns: first_name/last_name -> given_name/family_name, country.country
--     -> countries.name, address.address/address2 -> line1/line2, film.length ->
--     length_minutes, film.rental_duration -> rental_days, payment.payment_date ->
--     paid_at, ...;
--   * new columns: customers.full_name (given and family name merged),
--     customers.status (from activebool) and customers.signup_source (NOT NULL without
--     a default: the spec fills it with a constant), customers.user_id (the Supabase
--     auth user, for the row level security policies; NULL for migrated customers),
--     stores.name, staff_members.avatar_url, films.search (a generated tsvector);
--   * dropped: staff.password and staff.picture (sign-in moves to the auth service),
--     film.fulltext (replaced by films.search), film.revenue_projection (a generated
--     column nobody reads), customer.active (a generated copy of activebool);
--   * rental.rental_period (a tsrange) is split into rentals.rented_at and returned_at;
--   * payments is a plain table (Pagila's payment is partitioned by month) and holds
--     only money received: amount > 0 (the 24 zero-amount legacy payments stay behind);
--   * row level security is enabled on every table, with policies for the API roles
--     anon and authenticated (roles.sql).
--
-- The store <-> staff cycle is kept: a store has a manager (stores.manager_id, NOT
-- NULL, one store per manager) and every staff member works in a store
-- (staff_members.store_id, NOT NULL), as in Pagila. Both foreign keys are DEFERRABLE
-- INITIALLY DEFERRED, which is what the application needs anyway to open a store with
-- its first manager in one transaction; dm loads the two entities of the cycle in one
-- transaction and, since their UUIDs are computed rather than looked up, can write both
-- sides' foreign keys in the first pass.

SET client_min_messages = warning;

DROP TABLE IF EXISTS public.payments, public.rentals, public.inventory_items,
    public.customers, public.stores, public.staff_members, public.film_categories,
    public.film_actors, public.films, public.actors, public.categories, public.languages,
    public.addresses, public.cities, public.countries CASCADE;
DROP FUNCTION IF EXISTS public.set_updated_at();
DROP TYPE IF EXISTS public.mpaa_rating;

-- The rating enum, recreated with Pagila's labels in Pagila's order.
CREATE TYPE public.mpaa_rating AS ENUM ('G', 'PG', 'PG-13', 'R', 'NC-17');

-- updated_at is maintained by the database (dm-load switches this trigger off inside its
-- own transactions, so the legacy last_update value it maps onto updated_at stays).
CREATE FUNCTION public.set_updated_at() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

CREATE TABLE public.countries (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    legacy_id integer UNIQUE,
    name text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE public.cities (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    legacy_id integer UNIQUE,
    name text NOT NULL,
    country_id uuid NOT NULL REFERENCES public.countries (id),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX cities_country_id_idx ON public.cities (country_id);

CREATE TABLE public.addresses (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    legacy_id integer UNIQUE,
    line1 text NOT NULL,
    line2 text,
    district text NOT NULL,
    city_id uuid NOT NULL REFERENCES public.cities (id),
    postal_code text,
    phone text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX addresses_city_id_idx ON public.addresses (city_id);

CREATE TABLE public.languages (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE public.categories (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE public.actors (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    given_name text NOT NULL,
    family_name text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX actors_family_name_idx ON public.actors (family_name);

CREATE TABLE public.films (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    legacy_id integer UNIQUE,
    title text NOT NULL,
    description text,
    release_year integer CHECK (release_year BETWEEN 1901 AND 2155),
    language_id uuid NOT NULL REFERENCES public.languages (id),
    original_language_id uuid REFERENCES public.languages (id),
    rental_days smallint NOT NULL DEFAULT 3,
    rental_rate numeric(4,2) NOT NULL DEFAULT 4.99,
    length_minutes smallint,
    replacement_cost numeric(5,2) NOT NULL DEFAULT 19.99,
    rating public.mpaa_rating DEFAULT 'G',
    special_features text[],
    search tsvector GENERATED ALWAYS AS
        (to_tsvector('english'::regconfig, title || ' ' || coalesce(description, ''))) STORED,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX films_title_idx ON public.films (title);
CREATE INDEX films_language_id_idx ON public.films (language_id);
CREATE INDEX films_search_idx ON public.films USING gin (search);

CREATE TABLE public.film_actors (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    film_id uuid NOT NULL REFERENCES public.films (id) ON DELETE CASCADE,
    actor_id uuid NOT NULL REFERENCES public.actors (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (film_id, actor_id)
);
CREATE INDEX film_actors_actor_id_idx ON public.film_actors (actor_id);

CREATE TABLE public.film_categories (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    film_id uuid NOT NULL REFERENCES public.films (id) ON DELETE CASCADE,
    category_id uuid NOT NULL REFERENCES public.categories (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (film_id, category_id)
);
CREATE INDEX film_categories_category_id_idx ON public.film_categories (category_id);

CREATE TABLE public.stores (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    legacy_id integer UNIQUE,
    name text NOT NULL,
    manager_id uuid NOT NULL UNIQUE,  -- REFERENCES staff_members, added below (cycle)
    address_id uuid NOT NULL REFERENCES public.addresses (id),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE public.staff_members (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    legacy_id integer UNIQUE,
    given_name text NOT NULL,
    family_name text NOT NULL,
    email text,
    address_id uuid NOT NULL REFERENCES public.addresses (id),
    store_id uuid NOT NULL,            -- REFERENCES stores, added below (cycle)
    active boolean NOT NULL DEFAULT true,
    username text NOT NULL UNIQUE,
    avatar_url text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE public.stores ADD CONSTRAINT stores_manager_id_fkey
    FOREIGN KEY (manager_id) REFERENCES public.staff_members (id)
    DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE public.staff_members ADD CONSTRAINT staff_members_store_id_fkey
    FOREIGN KEY (store_id) REFERENCES public.stores (id)
    DEFERRABLE INITIALLY DEFERRED;

CREATE TABLE public.customers (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    legacy_id integer UNIQUE,
    user_id uuid UNIQUE,               -- the auth user, once the customer signs up online
    store_id uuid NOT NULL REFERENCES public.stores (id),
    given_name text NOT NULL,
    family_name text NOT NULL,
    full_name text NOT NULL,
    email text,
    address_id uuid NOT NULL REFERENCES public.addresses (id),
    status text NOT NULL CHECK (status IN ('active', 'inactive', 'suspended')),
    signup_source text NOT NULL CHECK (signup_source IN ('legacy', 'web', 'store')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX customers_store_id_idx ON public.customers (store_id);
CREATE INDEX customers_address_id_idx ON public.customers (address_id);
CREATE INDEX customers_family_name_idx ON public.customers (family_name);

CREATE TABLE public.inventory_items (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    film_id uuid NOT NULL REFERENCES public.films (id),
    store_id uuid NOT NULL REFERENCES public.stores (id),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX inventory_items_store_film_idx ON public.inventory_items (store_id, film_id);
CREATE INDEX inventory_items_film_id_idx ON public.inventory_items (film_id);

CREATE TABLE public.rentals (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    legacy_id integer UNIQUE,
    rented_at timestamptz NOT NULL,
    returned_at timestamptz,
    inventory_item_id uuid NOT NULL REFERENCES public.inventory_items (id),
    customer_id uuid NOT NULL REFERENCES public.customers (id),
    staff_member_id uuid NOT NULL REFERENCES public.staff_members (id),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK (returned_at IS NULL OR returned_at >= rented_at)
);
CREATE INDEX rentals_inventory_item_id_idx ON public.rentals (inventory_item_id);
CREATE INDEX rentals_customer_id_idx ON public.rentals (customer_id);
CREATE INDEX rentals_staff_member_id_idx ON public.rentals (staff_member_id);

CREATE TABLE public.payments (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    customer_id uuid NOT NULL REFERENCES public.customers (id),
    staff_member_id uuid NOT NULL REFERENCES public.staff_members (id),
    rental_id uuid NOT NULL REFERENCES public.rentals (id),
    amount numeric(5,2) NOT NULL CHECK (amount > 0),
    paid_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payments_customer_id_idx ON public.payments (customer_id);
CREATE INDEX payments_rental_id_idx ON public.payments (rental_id);
CREATE INDEX payments_staff_member_id_idx ON public.payments (staff_member_id);
CREATE INDEX payments_paid_at_idx ON public.payments (paid_at);

-- The updated_at trigger, and row level security, on every table.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['countries', 'cities', 'addresses', 'languages', 'categories',
        'actors', 'films', 'film_actors', 'film_categories', 'stores', 'staff_members',
        'customers', 'inventory_items', 'rentals', 'payments']
    LOOP
        EXECUTE format('CREATE TRIGGER set_updated_at BEFORE UPDATE ON public.%I '
            'FOR EACH ROW EXECUTE FUNCTION public.set_updated_at()', t);
        EXECUTE format('ALTER TABLE public.%I ENABLE ROW LEVEL SECURITY', t);
    END LOOP;
END
$$;

-- Policies. The table owner (app_owner, and so dm) is not subject to them: row level
-- security is enabled, not forced. Tables without a policy for a role show that role
-- nothing.

-- The catalog is public.
CREATE POLICY "catalog is readable by everyone" ON public.films
    FOR SELECT TO anon, authenticated USING (true);
CREATE POLICY "catalog is readable by everyone" ON public.actors
    FOR SELECT TO anon, authenticated USING (true);
CREATE POLICY "catalog is readable by everyone" ON public.film_actors
    FOR SELECT TO anon, authenticated USING (true);
CREATE POLICY "catalog is readable by everyone" ON public.categories
    FOR SELECT TO anon, authenticated USING (true);
CREATE POLICY "catalog is readable by everyone" ON public.film_categories
    FOR SELECT TO anon, authenticated USING (true);
CREATE POLICY "catalog is readable by everyone" ON public.languages
    FOR SELECT TO anon, authenticated USING (true);
CREATE POLICY "stores are readable by everyone" ON public.stores
    FOR SELECT TO anon, authenticated USING (true);
CREATE POLICY "places are readable when signed in" ON public.countries
    FOR SELECT TO authenticated USING (true);
CREATE POLICY "places are readable when signed in" ON public.cities
    FOR SELECT TO authenticated USING (true);

-- A signed-in customer sees and edits their own row, and sees their rentals and payments.
CREATE POLICY "customers read their own row" ON public.customers
    FOR SELECT TO authenticated USING (user_id = (SELECT auth.uid()));
CREATE POLICY "customers update their own row" ON public.customers
    FOR UPDATE TO authenticated
    USING (user_id = (SELECT auth.uid())) WITH CHECK (user_id = (SELECT auth.uid()));
CREATE POLICY "customers read their own address" ON public.addresses
    FOR SELECT TO authenticated
    USING (id IN (SELECT address_id FROM public.customers WHERE user_id = (SELECT auth.uid())));
CREATE POLICY "customers read their own rentals" ON public.rentals
    FOR SELECT TO authenticated
    USING (customer_id IN (SELECT id FROM public.customers WHERE user_id = (SELECT auth.uid())));
CREATE POLICY "customers read their own payments" ON public.payments
    FOR SELECT TO authenticated
    USING (customer_id IN (SELECT id FROM public.customers WHERE user_id = (SELECT auth.uid())));

-- Privileges: what the policies may then let through.
GRANT SELECT ON public.films, public.actors, public.film_actors, public.categories,
    public.film_categories, public.languages, public.stores TO anon;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO authenticated;
GRANT UPDATE (given_name, family_name, full_name, email) ON public.customers TO authenticated;
