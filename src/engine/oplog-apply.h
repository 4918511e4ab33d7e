/* Carrying out oplog replay plans (oplog-plan.h) as ordinary commands (insert/update/delete and
 * DDL), since a restore target may not offer applyOps. */
#pragma once

#include <bson/bson.h>
#include <mongoc/mongoc.h>

#include "common/error.h"
#include "oplog-plan.h"

/* Run the plan's actions in order. entry names the oplog entry in messages. A command's error
 * that means the state it wants is there already (tolerate_missing/tolerate_existing) is not
 * one. */
int ms_oplog_plan_execute(mongoc_client_t *c, const MsOplogPlan *plan, const bson_t *entry,
                          MsError *e);
