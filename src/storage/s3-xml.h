/* Minimal element extraction from S3's XML answers, and escaping for our requests. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/* S3 answers are machine-written, flat and small (error documents, upload ids, listings):
 * elements are found by name, their text decoded (the five predefined entities, numeric
 * character references, CDATA). No DTDs, no entity definitions, no namespaces prefixes are
 * interpreted - nothing a hostile server could use to make us expand or fetch anything. */

/* Step through the elements called name in [*pos, end): on success, *ret_inner/_len is the
 * raw content between the tags (empty for <name/>), *pos moves past the element, and the
 * result is true. Elements of the same name are not expected to nest. */
bool ms_s3_xml_next(const char **pos, const char *end, const char *name, const char **ret_inner,
                    size_t *ret_inner_len);

/* The decoded text of the first element called name in [xml, xml + len). Returns 0,
 * -ENOENT when there is none, -EBADMSG for malformed text, -ENOMEM. */
int ms_s3_xml_text(const char *xml, size_t len, const char *name, char **ret);

/* Decode element content (entities, CDATA). -EBADMSG when it holds markup or a bad entity. */
int ms_s3_xml_decode(const char *s, size_t len, char **ret);

/* The code and message of an S3 <Error> document (either may come back NULL when absent).
 * Returns -ENOENT when the text is no error document. */
int ms_s3_xml_error(const char *xml, size_t len, char **ret_code, char **ret_message);

/* Escape text for element content (&, <, >, and quotes). NULL when out of memory. */
char *ms_s3_xml_escape(const char *s);
