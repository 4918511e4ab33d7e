/* Which member of a replica set takes a policy's snapshot: the members' states from
 * replSetGetStatus and replSetGetConfig, ranked by the policy's NodePriority= (pure logic). */
#pragma once

#include <bson/bson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "config/conf.h"

/* Member states as replSetGetStatus reports them (MongoDB's documented numbers). */
#define MS_MEMBER_STATE_PRIMARY 1
#define MS_MEMBER_STATE_SECONDARY 2
#define MS_MEMBER_STATE_RECOVERING 3
#define MS_MEMBER_STATE_STARTUP2 5
#define MS_MEMBER_STATE_ARBITER 7
#define MS_MEMBER_STATE_DOWN 8
#define MS_MEMBER_STATE_ROLLBACK 9

typedef struct MsClusterMember {
    char *host;          /* "db2.example.net:27017", as the replica set names it */
    int state;           /* MS_MEMBER_STATE_* */
    bool healthy;        /* health == 1 (always true for the member answering) */
    bool hidden;         /* from the configuration */
    bool arbiter;        /* arbiterOnly in the configuration, or state ARBITER */
    uint64_t delay_usec; /* secondaryDelaySecs (slaveDelay before 5.0) */
    int64_t optime_usec; /* optimeDate; 0 when unknown */
    uint64_t lag_usec;   /* behind the primary (or the newest member without one) */
} MsClusterMember;

/* Why a member cannot take a snapshot, or NULL when it can. */
const char *ms_cluster_member_unfit(const MsClusterMember *m, uint64_t max_lag_usec);

/* Join a replSetGetStatus reply and a replSetGetConfig reply (as the server sends them: the
 * config under "config") into one entry per member, in the configuration's order, with lags
 * computed. Members missing from either reply are left out. */
int ms_cluster_members_parse(const bson_t *status, const bson_t *config,
                             MsClusterMember **ret_members, size_t *ret_n, MsError *e);
void ms_cluster_members_free(MsClusterMember *members, size_t n);

/* The members as a hello reply describes them, for deployments that answer hello but not
 * replSetGetStatus (FerretDB, or a user without the clusterMonitor role): hosts and passives
 * are data-bearing, the one named primary (or the answering member when it is the writable
 * primary of a one-host set) is the primary and the rest secondaries, arbiters are arbiters;
 * lags are unknown (0) and hidden members are not listed by hello at all. -EBADMSG when the
 * reply names no replica set (a standalone server). */
int ms_cluster_members_from_hello(const bson_t *hello, MsClusterMember **ret_members, size_t *ret_n,
                                  MsError *e);

/* The members fit to take a snapshot, best first, as indexes into members:
 *   auto       hidden secondaries, then visible secondaries (each by least lag), then primary;
 *   hidden     hidden secondaries only;
 *   secondary  secondaries, hidden or not, by least lag;
 *   primary    the primary only.
 * Never: arbiters, unhealthy or non-data-bearing states (recovering, startup, rollback, down),
 * delayed members (their data is hours old by design), and secondaries lagging more than
 * max_lag_usec (0: no limit). Ties in lag go to the host name, so every agent computes the same
 * order. -ENODEV with a message naming each member and why it is unfit when none is fit. */
int ms_cluster_rank(const MsClusterMember *members, size_t n, MsNodePriority priority,
                    uint64_t max_lag_usec, size_t **ret_order, size_t *ret_n, MsError *e);
