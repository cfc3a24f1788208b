/* A reference for bench/overlay_latency.py, not part of Corral: the least a userspace tunnel can do.
 *
 *   native_forwarder TUN LOCAL_PORT PEER_IP PEER_PORT [aes]
 *
 * One thread, one poll(2) loop: a packet read from the TUN leaves as one UDP datagram to the peer, a
 * datagram read from the socket is written to the TUN. With "aes" each packet is sealed with
 * AES-256-GCM (OpenSSL, a fixed all-zero key, an 8-byte counter as the nonce, contexts kept between
 * packets) and opened on the far side; a packet whose tag does not verify is dropped. No handshake, no
 * replay window, no offloads: it measures what the process hand-offs and one AEAD call per hop cost on
 * this machine, the floor under any userspace tunnel's added latency (Corral's, wireguard-go's).
 * It prints "ready" once the TUN and the socket are open.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#define TAG 16
#define CTR 8

static const unsigned char key[32];
static uint64_t counter;

static int seal(EVP_CIPHER_CTX *c, const unsigned char *in, int n, unsigned char *out) {
    unsigned char iv[12] = {0};
    int len = 0, fin = 0;
    counter++;
    memcpy(iv + 4, &counter, CTR);
    memcpy(out, &counter, CTR);
    if (!EVP_EncryptInit_ex(c, NULL, NULL, NULL, iv) || !EVP_EncryptUpdate(c, out + CTR, &len, in, n) ||
        !EVP_EncryptFinal_ex(c, out + CTR + len, &fin) ||
        !EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, TAG, out + CTR + n))
        return -1;
    return n + CTR + TAG;
}

static int open_(EVP_CIPHER_CTX *c, unsigned char *in, int n, unsigned char *out) {
    unsigned char iv[12] = {0};
    int len = 0, fin = 0;
    if (n < CTR + TAG)
        return -1;
    memcpy(iv + 4, in, CTR);
    if (!EVP_DecryptInit_ex(c, NULL, NULL, NULL, iv) || !EVP_DecryptUpdate(c, out, &len, in + CTR, n - CTR - TAG) ||
        !EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, TAG, in + n - TAG) || EVP_DecryptFinal_ex(c, out + len, &fin) <= 0)
        return -1;
    return n - CTR - TAG;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s TUN LOCAL_PORT PEER_IP PEER_PORT [aes]\n", argv[0]);
        return 2;
    }
    int aes = argc > 5 && strcmp(argv[5], "aes") == 0;
    int tun = open("/dev/net/tun", O_RDWR);
    if (tun < 0) {
        perror("/dev/net/tun");
        return 1;
    }
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
    strncpy(ifr.ifr_name, argv[1], IFNAMSIZ - 1);
    if (ioctl(tun, TUNSETIFF, &ifr) < 0) {
        perror("TUNSETIFF");
        return 1;
    }
    int sock = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in local = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
    if (sock < 0 || bind(sock, (struct sockaddr *)&local, sizeof local) < 0) {
        perror("bind");
        return 1;
    }
    struct sockaddr_in peer = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[4]))};
    if (inet_pton(AF_INET, argv[3], &peer.sin_addr) != 1) {
        fprintf(stderr, "bad peer address %s\n", argv[3]);
        return 2;
    }
    EVP_CIPHER_CTX *enc = EVP_CIPHER_CTX_new(), *dec = EVP_CIPHER_CTX_new();
    if (!enc || !dec || !EVP_EncryptInit_ex(enc, EVP_aes_256_gcm(), NULL, key, NULL) ||
        !EVP_DecryptInit_ex(dec, EVP_aes_256_gcm(), NULL, key, NULL)) {
        fprintf(stderr, "OpenSSL AES-256-GCM unavailable\n");
        return 1;
    }
    static unsigned char buf[65536], out[65536 + CTR + TAG];
    struct pollfd fds[2] = {{.fd = tun, .events = POLLIN}, {.fd = sock, .events = POLLIN}};
    printf("ready\n");
    fflush(stdout);
    for (;;) {
        if (poll(fds, 2, -1) < 0)
            continue;
        if (fds[0].revents & POLLIN) {
            int n = (int)read(tun, buf, sizeof buf);
            if (n > 0 && aes)
                n = seal(enc, buf, n, out);
            if (n > 0)
                sendto(sock, aes ? out : buf, (size_t)n, 0, (struct sockaddr *)&peer, sizeof peer);
        }
        if (fds[1].revents & POLLIN) {
            int n = (int)recv(sock, buf, sizeof buf, 0);
            if (n > 0 && aes)
                n = open_(dec, buf, n, out);
            if (n > 0)
                (void)!write(tun, aes ? out : buf, (size_t)n);
        }
    }
}
