-- Listing and counting a tenant's tasks from the indexes alone: each listing index carries the columns the list and
-- count filters read (status, type), so the count behind X-Total-Count and the page's ids come from index-only scans,
-- and a deep page reads the table for its own rows only (docs/benchmarks.md: 1,000,000 tasks, 100 tenants).

DROP INDEX tasks_tenant_created_idx;
CREATE INDEX tasks_tenant_created_idx ON tasks (tenant_id, created_at DESC, id DESC) INCLUDE (status, type);

DROP INDEX tasks_tenant_status_created_idx;
CREATE INDEX tasks_tenant_status_created_idx ON tasks (tenant_id, status, created_at DESC, id DESC) INCLUDE (type);

DROP INDEX tasks_tenant_type_created_idx;
CREATE INDEX tasks_tenant_type_created_idx ON tasks (tenant_id, type, created_at DESC, id DESC) INCLUDE (status);
