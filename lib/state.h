/*
 * state.h - dm's own tables in the destination (schema "dm"): checkpoints,
 * deferred deletes, run history. Created on first use.
 */
#ifndef DM_STATE_H
#define DM_STATE_H

#include "pg.h"

/* Creates the dm schema and tables when missing. Runs its own transaction. 0 or -1. */
int dmstate_ensure(PGconn *conn);

/*
 * Leases keep two runs from loading one entity at once, without session
 * state (PgBouncer-safe). Each call runs inside the caller's transaction.
 * take: 1 taken (or already ours), 0 held by a live run (*holder gets a
 * malloc'd description, or NULL), -1 error; it never queues behind the
 * holder's transaction. A lease whose holder's backend is gone, or that
 * expired, is taken over, unless its holder is in the middle of a
 * transaction that renewed it (the row is locked): that holder is alive,
 * whatever the clock says.
 */
int dmstate_lease_take(PGconn *conn, const char *entity, const char *owner, int ttl_seconds, char **holder);
/* Extends our lease; -1 (message printed) when it is no longer ours. */
int dmstate_lease_renew(PGconn *conn, const char *entity, const char *owner, int ttl_seconds);
int dmstate_lease_release(PGconn *conn, const char *entity, const char *owner);
/*
 * The same for n leases at once, in two statements whatever n (a run holds
 * every entity it migrates): take gives 1 when every one is taken (or
 * already ours), 0 when any is not (nothing said: the caller, having rolled
 * back, asks lease by lease to learn which and who holds it), -1 error.
 */
int dmstate_leases_take(PGconn *conn, char *const *entities, int n, const char *prefix, const char *owner,
    int ttl_seconds);
int dmstate_leases_release(PGconn *conn, char *const *entities, int n, const char *prefix, const char *owner);

#endif
