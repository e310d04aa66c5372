-- bench/constraints.sql - foreign keys and secondary indexes of the benchmark schema.
-- The source gets them after its data (faster to generate); the destination before any
-- row arrives, as a real destination has them.

ALTER TABLE region    ADD FOREIGN KEY (country_id) REFERENCES country;
ALTER TABLE warehouse ADD FOREIGN KEY (region_id) REFERENCES region;
-- One side of the cycle is deferrable, so that a plain COPY of both tables in one
-- transaction works (the raw COPY baseline needs it; dm does not).
ALTER TABLE warehouse ADD FOREIGN KEY (manager_id) REFERENCES employee
    DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE employee  ADD FOREIGN KEY (warehouse_id) REFERENCES warehouse;
ALTER TABLE category  ADD FOREIGN KEY (parent_id) REFERENCES category;
ALTER TABLE supplier  ADD FOREIGN KEY (country_id) REFERENCES country;
ALTER TABLE product   ADD FOREIGN KEY (supplier_id) REFERENCES supplier;
ALTER TABLE product   ADD FOREIGN KEY (category_id) REFERENCES category;
ALTER TABLE customer  ADD FOREIGN KEY (country_id) REFERENCES country;
ALTER TABLE address   ADD FOREIGN KEY (customer_id) REFERENCES customer ON DELETE CASCADE;
ALTER TABLE address   ADD FOREIGN KEY (region_id) REFERENCES region;
ALTER TABLE orders    ADD FOREIGN KEY (customer_id) REFERENCES customer;
ALTER TABLE orders    ADD FOREIGN KEY (shipping_address_id) REFERENCES address;
ALTER TABLE orders    ADD FOREIGN KEY (employee_id) REFERENCES employee;
ALTER TABLE orders    ADD FOREIGN KEY (currency_id) REFERENCES currency;
ALTER TABLE order_line ADD FOREIGN KEY (order_id) REFERENCES orders ON DELETE CASCADE;
ALTER TABLE order_line ADD FOREIGN KEY (product_id) REFERENCES product;
ALTER TABLE payment   ADD FOREIGN KEY (order_id) REFERENCES orders ON DELETE CASCADE;
ALTER TABLE shipment  ADD FOREIGN KEY (order_id) REFERENCES orders ON DELETE CASCADE;
ALTER TABLE shipment  ADD FOREIGN KEY (warehouse_id) REFERENCES warehouse;
ALTER TABLE inventory ADD FOREIGN KEY (product_id) REFERENCES product;
ALTER TABLE inventory ADD FOREIGN KEY (warehouse_id) REFERENCES warehouse;
ALTER TABLE review    ADD FOREIGN KEY (product_id) REFERENCES product;
ALTER TABLE review    ADD FOREIGN KEY (customer_id) REFERENCES customer;
ALTER TABLE price_history ADD FOREIGN KEY (product_id) REFERENCES product;
ALTER TABLE price_history ADD FOREIGN KEY (currency_id) REFERENCES currency;
ALTER TABLE audit_log ADD FOREIGN KEY (employee_id) REFERENCES employee;

CREATE INDEX ON region (country_id);
CREATE INDEX ON employee (warehouse_id);
CREATE INDEX ON category (parent_id);
CREATE INDEX ON product (supplier_id);
CREATE INDEX ON product (category_id);
CREATE INDEX ON customer (lower(email));
CREATE INDEX ON address (customer_id);
CREATE INDEX ON orders (customer_id);
-- Without it, each deleted address scans orders for its foreign key (13 s for 253 deletes at
-- scale 1, for every tool alike): the benchmark would measure the schema, not the tools.
CREATE INDEX ON orders (shipping_address_id);
CREATE INDEX ON orders (placed_at);
CREATE INDEX ON orders (status) WHERE status IN ('new', 'paid');
CREATE INDEX ON order_line (product_id);
CREATE INDEX ON payment (order_id);
CREATE INDEX ON shipment (order_id);
CREATE INDEX ON inventory (warehouse_id);
CREATE INDEX ON review (product_id);
CREATE INDEX ON review (customer_id);
CREATE INDEX ON price_history (product_id, valid_from);
CREATE INDEX ON audit_log (at);
-- The change column of the large tables is indexed, as it is wherever something reads
-- "what changed since" (a reporting feed, an ETL job): an incremental read is then an
-- index range scan, not a scan of the whole table.
CREATE INDEX ON customer (updated_at);
CREATE INDEX ON address (updated_at);
CREATE INDEX ON product (updated_at);
CREATE INDEX ON orders (updated_at);
CREATE INDEX ON order_line (updated_at);
CREATE INDEX ON payment (updated_at);
CREATE INDEX ON shipment (updated_at);
CREATE INDEX ON inventory (updated_at);
CREATE INDEX ON review (updated_at);
