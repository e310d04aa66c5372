/*
 * state.h - dm's own tables in the destination (schema "dm"): checkpoints,
 * deferred deletes, run history. Created on first use.
 */
#ifndef DM_STATE_H
#define DM_STATE_H

#include "pg.h"

/* Creates the dm schema and tables when missing. Runs its own transaction. 0 or -1. */
int dmstate_ensure(PGconn *conn);

#endif
