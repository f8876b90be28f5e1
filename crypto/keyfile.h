/*
 * keyfile.h - the one rule for reading a private key from a file (security
 * review, finding 8: a TLS key and a signing key of mode 0644 were loaded
 * silently, the at-rest key was accepted at 0660 and refused at 0604 or
 * through a symlink).
 *
 * Every private key fedc loads from a file goes through fc_key_file_read:
 * the TLS key of the coordinator, clients and admin tools (transport/), the
 * model-signing key (coordinator/model_sign.c), the at-rest key
 * (--model-key-file) and the CA key (`fedc pki issue`). The rule is checked
 * on the file opened (fstat of the descriptor that is then read, so what is
 * checked is what is read):
 *   1. a regular file. Symbolic links are followed: a Kubernetes Secret
 *      volume reaches every file through root's `..data/` symlinks, and the
 *      file they lead to is what the rule judges;
 *   2. owned by the process's effective user or by root: any other owner can
 *      rewrite it or change its mode behind our back;
 *   3. no permission for others;
 *   4. for the group read at most, and read only when the file is root's, its
 *      group is not root's (gid 0) and the process is in it (effective or
 *      supplementary group): a Kubernetes Secret mounted with defaultMode
 *      0440 and fsGroup (root:fsGroup 0440; the fsGroup's members are the
 *      pod's own processes) and Debian's ssl-cert convention (root:ssl-cert
 *      0640). A key of our own readable by its group shares it with every
 *      member for no reason: refused, like group write.
 */
#ifndef FEDC_CRYPTO_KEYFILE_H
#define FEDC_CRYPTO_KEYFILE_H

#include <stddef.h>
#include <sys/types.h>

/* The rule (4 points above) on a file's mode, owner and group for a process
 * of effective uid euid; group_is_ours: the process is in that group.
 * FEDC_OK, or FEDC_ERR_PERMISSION with one line in err naming path and the
 * fix. */
int fc_key_file_rule(const char *path, mode_t mode, uid_t owner, gid_t group, uid_t euid, int group_is_ours,
                     char *err, size_t errlen);

/* Open path (following symlinks), check the rule on the open file, read at
 * most cap bytes into a fresh NUL-terminated buffer (*out, *len without the
 * NUL; the caller wipes it with fc_wipe and frees it). Errors, with one line
 * in err naming the file: FEDC_ERR_NOT_FOUND, FEDC_ERR_IO (cannot open or
 * read: errno's text), FEDC_ERR_PERMISSION (the rule), FEDC_ERR_TOO_LARGE
 * (over cap). Nothing is left allocated on error. */
int fc_key_file_read(const char *path, size_t cap, char **out, size_t *len, char *err, size_t errlen);

#endif
