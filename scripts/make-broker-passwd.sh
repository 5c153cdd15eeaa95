#!/usr/bin/env bash
# Writes mosquitto's password file for the chargebus logins (see mosquitto/acl):
#
#   chargebus-core     CHARGEBUS_CORE_MQTT_PASSWORD
#   home-automation    CHARGEBUS_HA_MQTT_PASSWORD
#   bridge-<name>      CHARGEBUS_BRIDGE_<NAME>_MQTT_PASSWORD, for every `user bridge-<name>`
#                      line of the ACL (NAME in capitals, - as _): bridge-modbus takes
#                      CHARGEBUS_BRIDGE_MODBUS_MQTT_PASSWORD
#
# Usage: scripts/make-broker-passwd.sh [OUTPUT]     (default: mosquitto/passwd)
# The ACL read for the bridge logins: CHARGEBUS_MQTT_ACL (default: mosquitto/acl).
# With the passwords in .env:  set -a; . ./.env; set +a; scripts/make-broker-passwd.sh
#
# The file holds salted PBKDF2 hashes, never the passwords. It is replaced as a whole, so
# running the script again changes all passwords at once.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
output="${1:-$repo/mosquitto/passwd}"

die() {
    echo "make-broker-passwd: $*" >&2
    exit 1
}

acl="${CHARGEBUS_MQTT_ACL:-$repo/mosquitto/acl}"
[ -r "$acl" ] || die "cannot read the ACL $acl (CHARGEBUS_MQTT_ACL)"

users=(chargebus-core home-automation)
vars=(CHARGEBUS_CORE_MQTT_PASSWORD CHARGEBUS_HA_MQTT_PASSWORD)
# Each bridge has a login of its own, allowed only its own devices' states (mosquitto/acl).
url_vars=(CHARGEBUS_CORE_MQTT_PASSWORD)
while read -r bridge; do
    [[ "$bridge" =~ ^bridge-[a-z0-9-]+$ ]] ||
        die "bridge login '$bridge' in $acl: use bridge-<name> with a-z, 0-9 and -"
    name="${bridge#bridge-}"
    var="CHARGEBUS_BRIDGE_$(echo "${name//-/_}" | tr '[:lower:]' '[:upper:]')_MQTT_PASSWORD"
    users+=("$bridge")
    vars+=("$var")
    url_vars+=("$var")
done < <(sed -n 's/^user[[:space:]]\{1,\}\(bridge-[^[:space:]]*\)[[:space:]]*$/\1/p' "$acl")

for i in "${!users[@]}"; do
    var="${vars[$i]}"
    value="${!var:-}"
    # An empty password would be a login anyone can guess.
    [ -n "$value" ] || die "$var is empty or unset: set a password for ${users[$i]}"
done

# core and bridge passwords go into CHARGEBUS_MQTT_URL (mqtt://user:PW@host), where '@', ':',
# '/', '%' and the like would change the URL's meaning. Refusing them is simpler than asking
# for the same password percent-encoded in one place and plain in another.
for var in "${url_vars[@]}"; do
    if [[ ! "${!var}" =~ ^[A-Za-z0-9._~-]+$ ]]; then
        die "$var may hold only letters, digits and . _ ~ - (it is part of a URL);" \
            "try: openssl rand -hex 16"
    fi
done

if command -v mosquitto_passwd >/dev/null 2>&1; then
    passwd_cmd=(mosquitto_passwd)
    workdir_arg=""
elif command -v docker >/dev/null 2>&1; then
    # The official image has the tool; the file is written into a mounted directory.
    passwd_cmd=(docker run --rm --user "$(id -u):$(id -g)" -v "WORKDIR:/work"
                eclipse-mosquitto:2 mosquitto_passwd)
    workdir_arg="/work"
else
    die "no mosquitto_passwd (Debian: apt-get install mosquitto) and no docker to borrow it from"
fi

outdir="$(dirname "$output")"
mkdir -p "$outdir"
# Build the new file next to the old one and rename it into place, so a failure half-way
# never leaves a file with only some of the users.
tmpdir="$(mktemp -d "$outdir/.passwd.XXXXXX")"
trap 'rm -rf "$tmpdir"' EXIT

run_passwd() {  # run_passwd [-c] USER PASSWORD
    local cmd=("${passwd_cmd[@]}") file="$tmpdir/passwd" flags=(-b)
    if [ -n "$workdir_arg" ]; then
        cmd=("${cmd[@]/WORKDIR/$tmpdir}")
        file="$workdir_arg/passwd"
    fi
    if [ "$1" = "-c" ]; then
        flags+=(-c)
        shift
    fi
    # -b puts the password on the command line (visible in `ps` for a moment);
    # mosquitto_passwd has no other non-interactive way.
    "${cmd[@]}" "${flags[@]}" "$file" "$1" "$2" >/dev/null
}

for i in "${!users[@]}"; do
    var="${vars[$i]}"
    # -c on the first user starts the file afresh.
    create=()
    if [ "$i" -eq 0 ]; then create=(-c); fi
    run_passwd "${create[@]}" "${users[$i]}" "${!var}" ||
        die "mosquitto_passwd failed for ${users[$i]}"
done

# World-readable on purpose: the official image reads the file as its own user (uid 1883)
# through the bind mount, and the file holds only salted hashes. For 0600, chown it to 1883.
chmod 0644 "$tmpdir/passwd"
mv -f "$tmpdir/passwd" "$output"
echo "make-broker-passwd: wrote $output for ${users[*]}"
