/* S3 credentials: systemd credentials, AWS environment variables, the shared file. */
#pragma once

#include "common/error.h"

/* Names of the systemd credentials (files in $CREDENTIALS_DIRECTORY). */
#define MS_S3_CRED_ACCESS_KEY_ID "s3-access-key-id"
#define MS_S3_CRED_SECRET_ACCESS_KEY "s3-secret-access-key"
#define MS_S3_CRED_SESSION_TOKEN "s3-session-token"

typedef struct MsS3Credentials {
    char *access_key_id;
    char *secret_access_key;
    char *session_token; /* NULL without temporary credentials */
    /* Where they came from, for messages ("the environment (AWS_ACCESS_KEY_ID, ...)"); never
     * any part of the values. */
    char *source;
} MsS3Credentials;

/* Look in this order and take the first place that has an access key id: systemd
 * credentials, the environment, the shared credentials file (AWS_SHARED_CREDENTIALS_FILE or
 * ~/.aws/credentials, profile AWS_PROFILE or "default"). Messages name files and variables,
 * never values. */
int ms_s3_credentials_load(MsS3Credentials *ret, MsError *e);

/* Wipe and free. */
void ms_s3_credentials_done(MsS3Credentials *c);
