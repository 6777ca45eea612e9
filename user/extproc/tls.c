/* xp_tls: the server's TLS material, shared by every worker.
 *
 * Workers take the current SSL_CTX for each new connection; the control
 * thread swaps in a new one when the certificate files change. The swap and
 * the take happen under a mutex (held for a pointer copy and a refcount
 * bump, once per connection, never per request), and each connection's SSL
 * holds its own reference, so live connections keep the pair they started
 * with and the old SSL_CTX is freed with its last connection. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "extproc/grpc.h"

/* The reference generates RSA-4096. Measured on the 2-core build machine,
 * that takes 0.7-3 s (1.5 s on average) of start-up; RSA-2048 takes 0.1-0.3 s
 * and is what gateways accept just as well (they skip verification of this
 * certificate anyway, spec §2.1). */
#define SELF_SIGNED_RSA_BITS 2048
#define SELF_SIGNED_DAYS 3650
/* A PEM file bigger than this is not a certificate or key we will read. */
#define PEM_MAX_BYTES (1 << 20)

struct xp_tls {
	pthread_mutex_t mu;
	SSL_CTX *cur; /* guarded by mu */
	_Atomic int min_version; /* 0: the context's TLS 1.2 */
	char *dir;    /* NULL: self-signed, nothing to reload */
	/* The file contents last tried (loaded or refused), so a broken pair is
	 * reported once per change rather than on every poll. */
	char *seen_crt, *seen_key;
	size_t seen_crt_len, seen_key_len;
};

static void set_err(char *err, size_t errlen, const char *what)
{
	unsigned long e = ERR_get_error();
	char ebuf[256];
	if (e) {
		ERR_error_string_n(e, ebuf, sizeof(ebuf));
		snprintf(err, errlen, "%s: %s", what, ebuf);
	} else {
		snprintf(err, errlen, "%s", what);
	}
	ERR_clear_error();
}

/* Selects "h2" from the client's ALPN list; a client that offers ALPN
 * without h2 is refused with the no_application_protocol alert. */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
		       const unsigned char *in, unsigned int inlen, void *arg)
{
	unsigned int i = 0;
	while (i < inlen) {
		unsigned int l = in[i];
		if (l > inlen - i - 1)
			break;
		if (l == 2 && in[i + 1] == 'h' && in[i + 2] == '2') {
			*out = in + i + 1;
			*outlen = 2;
			return SSL_TLSEXT_ERR_OK;
		}
		i += 1 + l;
	}
	return SSL_TLSEXT_ERR_ALERT_FATAL;
}

static SSL_CTX *ctx_new(char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx) {
		set_err(err, errlen, "SSL_CTX_new");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
					 SSL_OP_CIPHER_SERVER_PREFERENCE);
	/* HTTP/2 over TLS 1.2 needs ephemeral key exchange and an AEAD cipher
	 * (RFC 9113 §9.2.2); TLS 1.3 suites all qualify. */
	if (SSL_CTX_set_cipher_list(ctx, "ECDHE-ECDSA-AES128-GCM-SHA256:"
					 "ECDHE-RSA-AES128-GCM-SHA256:"
					 "ECDHE-ECDSA-AES256-GCM-SHA384:"
					 "ECDHE-RSA-AES256-GCM-SHA384:"
					 "ECDHE-ECDSA-CHACHA20-POLY1305:"
					 "ECDHE-RSA-CHACHA20-POLY1305") != 1) {
		set_err(err, errlen, "SSL_CTX_set_cipher_list");
		SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
	return ctx;
}

static int add_ext(X509 *x, int nid, const char *value)
{
	X509V3_CTX v3;
	X509V3_set_ctx_nodb(&v3);
	X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
	X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
	if (!ext)
		return -1;
	int ok = X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	return ok ? 0 : -1;
}

/* A random positive 127-bit serial, as the reference draws below 2^128. */
static int set_serial(X509 *x)
{
	unsigned char b[16];
	if (RAND_bytes(b, sizeof(b)) != 1)
		return -1;
	b[0] &= 0x7f;
	BIGNUM *bn = BN_bin2bn(b, sizeof(b), NULL);
	if (!bn)
		return -1;
	ASN1_INTEGER *ai = BN_to_ASN1_INTEGER(bn, NULL);
	BN_free(bn);
	if (!ai)
		return -1;
	int ok = X509_set_serialNumber(x, ai);
	ASN1_INTEGER_free(ai);
	return ok ? 0 : -1;
}

/* The reference's certificate: Organization "Inference Ext", ten years,
 * digitalSignature + keyEncipherment, serverAuth, CA:FALSE. It carries no
 * name there; here it also names localhost (DNS and loopback IPs) so local
 * tools that verify can reach it with a name override or on loopback. */
static int self_signed(SSL_CTX *ctx, char *err, size_t errlen)
{
	int rc = -EINVAL;
	X509 *x = NULL;
	EVP_PKEY *key = EVP_RSA_gen(SELF_SIGNED_RSA_BITS);
	if (!key) {
		set_err(err, errlen, "RSA key generation");
		return -ENOMEM;
	}
	x = X509_new();
	if (!x || !X509_set_version(x, 2) || set_serial(x) < 0 ||
	    !X509_gmtime_adj(X509_getm_notBefore(x), 0) ||
	    !X509_time_adj_ex(X509_getm_notAfter(x), SELF_SIGNED_DAYS, 0, NULL)) {
		set_err(err, errlen, "certificate fields");
		goto out;
	}
	X509_NAME *name = X509_get_subject_name(x);
	if (!X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
					(const unsigned char *)"Inference Ext", -1, -1, 0) ||
	    !X509_set_issuer_name(x, name) || !X509_set_pubkey(x, key) ||
	    add_ext(x, NID_basic_constraints, "critical,CA:FALSE") < 0 ||
	    add_ext(x, NID_key_usage, "critical,digitalSignature,keyEncipherment") < 0 ||
	    add_ext(x, NID_ext_key_usage, "serverAuth") < 0 ||
	    add_ext(x, NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1,IP:::1") < 0) {
		set_err(err, errlen, "certificate fields");
		goto out;
	}
	if (!X509_sign(x, key, EVP_sha256())) {
		set_err(err, errlen, "certificate signing");
		goto out;
	}
	if (SSL_CTX_use_certificate(ctx, x) != 1 || SSL_CTX_use_PrivateKey(ctx, key) != 1) {
		set_err(err, errlen, "self-signed certificate");
		goto out;
	}
	rc = 0;
out:
	X509_free(x);
	EVP_PKEY_free(key);
	return rc;
}

/* Reads a whole small file; NUL-terminated for PEM parsing. */
static int read_file(const char *path, char **out, size_t *len, char *err, size_t errlen)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;
		snprintf(err, errlen, "%s: %s", path, strerror(e));
		return -e;
	}
	struct stat sb;
	if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode) || sb.st_size > PEM_MAX_BYTES) {
		snprintf(err, errlen, "%s: not a regular file of at most %d bytes", path,
			 PEM_MAX_BYTES);
		close(fd);
		return -EINVAL;
	}
	size_t cap = (size_t)sb.st_size + 1, n = 0;
	char *buf = malloc(cap);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	/* The file may grow between fstat and read: read what fits, and a
	 * truncated PEM fails to parse rather than overflowing. */
	while (n < cap - 1) {
		ssize_t r = read(fd, buf + n, cap - 1 - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int e = errno;
			snprintf(err, errlen, "%s: %s", path, strerror(e));
			free(buf);
			close(fd);
			return -e;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	buf[n] = '\0';
	*out = buf;
	*len = n;
	return 0;
}

/* Builds an SSL_CTX from PEM text: the leaf certificate first, then any
 * chain certificates, and the private key that matches the leaf. */
static SSL_CTX *ctx_from_pem(const char *crt, size_t crt_len, const char *key, size_t key_len,
			     char *err, size_t errlen)
{
	SSL_CTX *ctx = ctx_new(err, errlen);
	if (!ctx)
		return NULL;
	BIO *bc = BIO_new_mem_buf(crt, (int)crt_len);
	BIO *bk = BIO_new_mem_buf(key, (int)key_len);
	X509 *leaf = NULL;
	EVP_PKEY *pk = NULL;
	if (!bc || !bk) {
		set_err(err, errlen, "BIO_new_mem_buf");
		goto fail;
	}
	leaf = PEM_read_bio_X509(bc, NULL, NULL, NULL);
	if (!leaf) {
		set_err(err, errlen, "tls.crt: no certificate");
		goto fail;
	}
	pk = PEM_read_bio_PrivateKey(bk, NULL, NULL, NULL);
	if (!pk) {
		set_err(err, errlen, "tls.key: no private key");
		goto fail;
	}
	if (X509_check_private_key(leaf, pk) != 1) {
		set_err(err, errlen, "tls.key does not match tls.crt");
		goto fail;
	}
	if (SSL_CTX_use_certificate(ctx, leaf) != 1 || SSL_CTX_use_PrivateKey(ctx, pk) != 1) {
		set_err(err, errlen, "tls.crt/tls.key not usable");
		goto fail;
	}
	X509 *extra;
	while ((extra = PEM_read_bio_X509(bc, NULL, NULL, NULL)) != NULL) {
		if (SSL_CTX_add0_chain_cert(ctx, extra) != 1) {
			X509_free(extra);
			set_err(err, errlen, "tls.crt: chain certificate");
			goto fail;
		}
	}
	ERR_clear_error(); /* the loop ends on "no start line" */
	X509_free(leaf);
	EVP_PKEY_free(pk);
	BIO_free(bc);
	BIO_free(bk);
	return ctx;
fail:
	X509_free(leaf);
	EVP_PKEY_free(pk);
	BIO_free(bc);
	BIO_free(bk);
	SSL_CTX_free(ctx);
	return NULL;
}

/* Reads the pair. Returns 1 and a new SSL_CTX in |*out| when the files
 * differ from the last ones tried, 0 when unchanged, <0 on error. */
static int load_dir(xp_tls *t, SSL_CTX **out, char *err, size_t errlen)
{
	char path[4096];
	char *crt = NULL, *key = NULL;
	size_t crt_len = 0, key_len = 0;
	int r;

	snprintf(path, sizeof(path), "%s/tls.crt", t->dir);
	r = read_file(path, &crt, &crt_len, err, errlen);
	if (r < 0)
		return r;
	snprintf(path, sizeof(path), "%s/tls.key", t->dir);
	r = read_file(path, &key, &key_len, err, errlen);
	if (r < 0) {
		free(crt);
		return r;
	}
	if (t->seen_crt && crt_len == t->seen_crt_len && key_len == t->seen_key_len &&
	    memcmp(crt, t->seen_crt, crt_len) == 0 && memcmp(key, t->seen_key, key_len) == 0) {
		free(crt);
		free(key);
		return 0;
	}
	SSL_CTX *ctx = ctx_from_pem(crt, crt_len, key, key_len, err, errlen);
	free(t->seen_crt);
	free(t->seen_key);
	t->seen_crt = crt;
	t->seen_crt_len = crt_len;
	t->seen_key = key;
	t->seen_key_len = key_len;
	if (!ctx)
		return -EINVAL;
	*out = ctx;
	return 1;
}

xp_tls *xp_tls_new(const char *cert_dir, char *err, size_t errlen)
{
	xp_tls *t = calloc(1, sizeof(*t));
	if (!t) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	pthread_mutex_init(&t->mu, NULL);
	if (cert_dir && *cert_dir) {
		t->dir = strdup(cert_dir);
		if (!t->dir || load_dir(t, &t->cur, err, errlen) < 0)
			goto fail;
		return t;
	}
	t->cur = ctx_new(err, errlen);
	if (!t->cur || self_signed(t->cur, err, errlen) < 0)
		goto fail;
	return t;
fail:
	xp_tls_free(t);
	return NULL;
}

int xp_tls_maybe_reload(xp_tls *t, char *err, size_t errlen)
{
	if (!t->dir)
		return 0;
	SSL_CTX *ctx = NULL;
	int r = load_dir(t, &ctx, err, errlen);
	if (r <= 0)
		return r;
	pthread_mutex_lock(&t->mu);
	SSL_CTX *old = t->cur;
	t->cur = ctx;
	pthread_mutex_unlock(&t->mu);
	SSL_CTX_free(old);
	return 1;
}

SSL *xp_tls_ssl_new(xp_tls *t)
{
	pthread_mutex_lock(&t->mu);
	SSL_CTX *ctx = t->cur;
	SSL_CTX_up_ref(ctx);
	pthread_mutex_unlock(&t->mu);
	SSL *ssl = SSL_new(ctx);
	SSL_CTX_free(ctx);
	int v = atomic_load(&t->min_version);
	if (ssl && v && SSL_set_min_proto_version(ssl, v) != 1) {
		SSL_free(ssl);
		return NULL;
	}
	return ssl;
}

int xp_tls_set_min_version(xp_tls *t, const char *version)
{
	static const struct {
		const char *name;
		int v;
	} names[] = {
		{"1.2", TLS1_2_VERSION}, {"VersionTLS12", TLS1_2_VERSION},
		{"1.3", TLS1_3_VERSION}, {"VersionTLS13", TLS1_3_VERSION},
	};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strcmp(version, names[i].name) == 0) {
			atomic_store(&t->min_version, names[i].v);
			return 0;
		}
	return -EINVAL;
}

void xp_tls_free(xp_tls *t)
{
	if (!t)
		return;
	SSL_CTX_free(t->cur);
	free(t->dir);
	free(t->seen_crt);
	free(t->seen_key);
	pthread_mutex_destroy(&t->mu);
	free(t);
}
