/* Secret redaction: what may be shown of a MongoDB URI. */
#pragma once

/* Return a newly allocated copy of a MongoDB connection string with the password
 * and every secret-bearing option removed, safe for logs, errors and manifests.
 * Never fails on malformed input: an unparsable string yields "<unparsable URI>". */
char *ms_uri_redact(const char *uri);

/* Overwrite every occurrence of secret in text with '*' (a driver's message that quotes a
 * URI or a password); nothing when secret is NULL or empty. */
void ms_secret_scrub(char *text, const char *secret);

/* Overwrite a secret string in memory before freeing it. */
void ms_secret_free(char *secret);
