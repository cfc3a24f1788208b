#!/bin/sh
# The lab's web tier (image corral-lab/web): busybox httpd runs this for "/" (there is no index.html).
#   GET /                   counts: INCR hits, prints "hits N"
#   GET /?get=KEY           prints the value of KEY (404 if there is none)
#   GET /?set=KEY&value=V   stores V under KEY, prints "ok"
# The database is Redis at $REDIS_HOST:$REDIS_PORT (redis-cli, 3 s at most per call). Every answer is
# text/plain and ends with the line "served by CONTAINER" ($CORRAL_CONTAINER, which Corral sets).
# Keys are 1-100 of A-Z a-z 0-9 . _ : - ; values any text (URL-encoded in the query).

reply() {  # STATUS TEXT
    printf 'HTTP/1.0 %s\r\nContent-Type: text/plain; charset=utf-8\r\nCache-Control: no-store\r\n\r\n' "$1"
    printf '%s\n' "$2"
    printf 'served by %s\n' "${CORRAL_CONTAINER:-$(hostname)}"
    exit 0
}

decode() { busybox httpd -d "$1"; }

redis() {  # ARGS… -> the reply on stdout, or (non-zero) the reason it failed
    if [ -z "$REDIS_HOST" ]; then
        echo "REDIS_HOST is not set: give the web service REDIS_HOST (and REDIS_PORT) in its environment"
        return 1
    fi
    out=$(timeout 3 redis-cli -h "$REDIS_HOST" -p "${REDIS_PORT:-6379}" "$@" 2>&1)
    code=$?
    case "$out" in
        ERR*|WRONGTYPE*|NOAUTH*|DENIED*|MISCONF*|LOADING*|READONLY*) code=1 ;;
    esac
    if [ "$code" != 0 ]; then
        [ "$code" = 124 ] && out="no answer within 3 s"
        echo "redis at $REDIS_HOST:${REDIS_PORT:-6379}: $out"
        return 1
    fi
    printf '%s' "$out"
}

get="" set="" value="" has_get="" has_set=""
old_ifs=$IFS
IFS='&'
for pair in $QUERY_STRING; do
    name=${pair%%=*}
    case "$pair" in *=*) raw=${pair#*=} ;; *) raw="" ;; esac
    case "$name" in
        get) has_get=1; get=$(decode "$raw") ;;
        set) has_set=1; set=$(decode "$raw") ;;
        value) value=$(decode "$raw") ;;
    esac
done
IFS=$old_ifs

valid_key() {
    [ -n "$1" ] && [ "${#1}" -le 100 ] && ! printf '%s' "$1" | grep -q '[^A-Za-z0-9._:-]'
}

if [ -n "$has_set" ]; then
    valid_key "$set" || reply "400 Bad Request" "bad key: 1-100 of A-Z a-z 0-9 . _ : -"
    stored=$(redis SET "$set" "$value") || reply "502 Bad Gateway" "$stored"
    reply "200 OK" "ok"
elif [ -n "$has_get" ]; then
    valid_key "$get" || reply "400 Bad Request" "bad key: 1-100 of A-Z a-z 0-9 . _ : -"
    exists=$(redis EXISTS "$get") || reply "502 Bad Gateway" "$exists"
    [ "$exists" = 1 ] || reply "404 Not Found" "no key $get"
    found=$(redis GET "$get") || reply "502 Bad Gateway" "$found"
    reply "200 OK" "$found"
else
    hits=$(redis INCR hits) || reply "502 Bad Gateway" "$hits"
    reply "200 OK" "hits $hits"
fi
