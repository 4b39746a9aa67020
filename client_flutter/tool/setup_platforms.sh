#!/usr/bin/env bash
# Generates the platform folders with `flutter create` and adds what this app
# needs that the templates lack. Run it once after cloning (and again after a
# Flutter upgrade); running it twice changes nothing.
#
#   bash tool/setup_platforms.sh               # flutter create + patches
#   bash tool/setup_platforms.sh --patch-only  # patches only (folders exist)
#
# Android (android/app/src/main/AndroidManifest.xml):
#   INTERNET  - the template grants it to debug builds only; release needs it.
#   CAMERA    - scanning the pairing QR code (mobile_scanner).
#   usesCleartextTraffic - the server speaks plain HTTP on the LAN (links,
#               file URLs opened in the browser); raw TCP is not affected.
# iOS (ios/Runner/Info.plist):
#   NSCameraUsageDescription, NSLocalNetworkUsageDescription - the prompts
#   iOS shows before the camera and before LAN access;
#   NSAppTransportSecurity/NSAllowsLocalNetworking - plain HTTP to LAN hosts.
set -euo pipefail
cd "$(dirname "$0")/.."

PLATFORMS=${PLATFORMS:-android,ios,windows,web}
ANDROID_MANIFEST=android/app/src/main/AndroidManifest.xml
IOS_PLIST=ios/Runner/Info.plist

# Replaces $1 with the output of the rest of the command, keeping it on error.
rewrite() {
    local file=$1
    shift
    "$@" <"$file" >"$file.tmp"
    mv "$file.tmp" "$file"
}

patch_android() {
    local manifest=$ANDROID_MANIFEST
    if [ ! -f "$manifest" ]; then
        echo "skip android: no $manifest"
        return
    fi
    for permission in INTERNET CAMERA; do
        if ! grep -q "android.permission.$permission\"" "$manifest"; then
            # Permissions go right after the opening <manifest ...> tag.
            rewrite "$manifest" awk -v line="    <uses-permission android:name=\"android.permission.$permission\"/>" '
                { print }
                !done && /<manifest/ { opening = 1 }
                !done && opening && />/ { print line; done = 1 }'
            echo "android: added $permission permission"
        fi
    done
    if ! grep -q 'android:usesCleartextTraffic' "$manifest"; then
        rewrite "$manifest" awk '
            !done && /<application/ {
                sub(/<application/, "<application\n        android:usesCleartextTraffic=\"true\"")
                done = 1
            }
            { print }'
        echo "android: allowed cleartext traffic"
    fi
}

# Adds <key>$1</key> followed by the value lines $2 before the plist's last
# </dict>, unless the key is there already.
plist_add() {
    local key=$1 value=$2
    if grep -q "<key>$key</key>" "$IOS_PLIST"; then
        return
    fi
    local last
    last=$(grep -n '</dict>' "$IOS_PLIST" | tail -n 1 | cut -d: -f1)
    rewrite "$IOS_PLIST" awk -v at="$last" -v key="$key" -v value="$value" '
        NR == at { printf "\t<key>%s</key>\n%s\n", key, value }
        { print }'
    echo "ios: added $key"
}

patch_ios() {
    if [ ! -f "$IOS_PLIST" ]; then
        echo "skip ios: no $IOS_PLIST"
        return
    fi
    plist_add NSCameraUsageDescription \
        $'\t<string>Scan the pairing QR code shown by the LAN Chat server.</string>'
    plist_add NSLocalNetworkUsageDescription \
        $'\t<string>Connect to the LAN Chat server on your local network.</string>'
    plist_add NSAppTransportSecurity \
        $'\t<dict>\n\t\t<key>NSAllowsLocalNetworking</key>\n\t\t<true/>\n\t</dict>'
}

remove_template_test() {
    # `flutter create` adds a counter-app test when test/widget_test.dart is
    # missing; it does not match this app.
    local template=test/widget_test.dart
    if [ -f "$template" ] && grep -q 'Counter increments smoke test' "$template"; then
        rm "$template"
        echo "removed the template's $template"
    fi
}

if [ "${1:-}" != "--patch-only" ]; then
    flutter create . --platforms="$PLATFORMS" --project-name lan_chat --org org.lanchat
    remove_template_test
fi
patch_android
patch_ios
echo "platforms ready: $PLATFORMS"
