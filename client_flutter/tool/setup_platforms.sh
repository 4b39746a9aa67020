#!/usr/bin/env bash
# Generates the platform folders with `flutter create` and adds what this app
# needs that the templates lack. Run it once after cloning (and again after a
# Flutter upgrade); running it twice changes nothing.
#
#   bash tool/setup_platforms.sh               # flutter create + patches
#   bash tool/setup_platforms.sh --patch-only  # patches only (folders exist)
#
# Android (android/app/src/main/AndroidManifest.xml, android/app/build.gradle*):
#   INTERNET  - the template grants it to debug builds only; release needs it.
#   CAMERA    - scanning the pairing QR code (mobile_scanner).
#   POST_NOTIFICATIONS - new-message notifications (Android 13 asks first).
#   WRITE_EXTERNAL_STORAGE (API <= 29 only) and requestLegacyExternalStorage -
#               saving a received photo to the gallery on Android 10 and older
#               (gal).
#   usesCleartextTraffic - the server speaks plain HTTP on the LAN (links,
#               file URLs opened in the browser); raw TCP is not affected.
#   minSdk >= 24 - flutter_local_notifications 22 needs 24, mobile_scanner
#               7.1.4 needs 23; Flutter's templates may default to lower.
#   compileSdk >= 36 - what mobile_scanner 7.1.4 and flutter_local_notifications
#               22 compile against.
#   core library desugaring - flutter_local_notifications needs it (its
#               README: "Developers will need to update their application's
#               Gradle file to enable desugaring").
# iOS (ios/Runner/Info.plist):
#   NSCameraUsageDescription, NSLocalNetworkUsageDescription - the prompts
#   iOS shows before the camera and before LAN access;
#   NSPhotoLibraryAddUsageDescription (and NSPhotoLibraryUsageDescription,
#   which iOS 13 asks for) - "Save to Photos" (gal). Picking photos needs no
#   key: file_picker uses PHPicker, which runs outside the app;
#   NSAppTransportSecurity/NSAllowsLocalNetworking - plain HTTP to LAN hosts;
#   UIFileSharingEnabled, LSSupportsOpeningDocumentsInPlace - received files
#   (the app's Documents folder) show in the Files app under "LAN Chat".
#
# Portable on purpose: this runs on macOS (BWK awk, BSD sed) as well as on
# Linux (mawk, gawk). Values reach awk through ENVIRON, never `awk -v`: BWK awk
# rejects a -v value with a newline ("newline in string").
set -euo pipefail
cd "$(dirname "$0")/.."

PLATFORMS=${PLATFORMS:-android,ios,windows,web}
ANDROID_MANIFEST=android/app/src/main/AndroidManifest.xml
IOS_PLIST=ios/Runner/Info.plist

# Replaces file $1 with the output of the rest of the command. On failure the
# file is left as it was and no temporary file stays behind.
rewrite() {
    local file=$1
    shift
    if "$@" <"$file" >"$file.tmp"; then
        mv "$file.tmp" "$file"
    else
        rm -f "$file.tmp"
        echo "error: could not patch $file" >&2
        return 1
    fi
}

# Prints stdin with the line in $LINE inserted after the end of the first tag
# that starts with $TAG (the tag may span several lines).
insert_after_tag() {
    awk '
        { print }
        !done && index($0, ENVIRON["TAG"]) { inside = 1 }
        !done && inside && />/ { print ENVIRON["LINE"]; done = 1 }'
}

android_permission() {
    local permission=$1 extra=${2:-}
    if ! grep -q "android.permission.$permission\"" "$ANDROID_MANIFEST"; then
        # Permissions go right after the opening <manifest ...> tag.
        TAG='<manifest' LINE="    <uses-permission android:name=\"android.permission.$permission\"$extra/>" \
            rewrite "$ANDROID_MANIFEST" insert_after_tag
        echo "android: added $permission permission"
    fi
}

# Adds attribute $1="$2" to the <application> tag, unless it is there.
android_application_attribute() {
    local name=$1 value=$2
    if ! grep -q "$name=" "$ANDROID_MANIFEST"; then
        # The attribute goes right after "<application", which may or may
        # not end its line.
        ATTRIBUTE="        $name=\"$value\"" rewrite "$ANDROID_MANIFEST" awk '
            !done && sub(/<application/, "<application\n" ENVIRON["ATTRIBUTE"]) { done = 1 }
            { print }'
        echo "android: set $name"
    fi
}

MIN_SDK=24
COMPILE_SDK=36
DESUGAR_LIBS=com.android.tools:desugar_jdk_libs:2.1.4

# `minSdk = flutter.minSdkVersion` becomes at least $MIN_SDK, and
# `compileSdk = flutter.compileSdkVersion` at least $COMPILE_SDK (mobile_scanner,
# flutter_local_notifications and androidx.core compile against 36), in the
# Kotlin DSL (build.gradle.kts, templates since Flutter 3.29) or in Groovy.
android_sdk_floor() {
    local name=$1 floor=$2 gradle expression
    for gradle in android/app/build.gradle.kts android/app/build.gradle; do
        [ -f "$gradle" ] || continue
        grep -q "flutter\.${name}Version" "$gradle" || continue
        grep -q "$name = [mM]a[tx]" "$gradle" && continue
        case $gradle in
            *.kts) expression="maxOf(flutter.${name}Version, $floor)" ;;
            *)     expression="Math.max(flutter.${name}Version, $floor)" ;;
        esac
        PATTERN="^ *${name}(Version)?[ =]+flutter\.${name}Version" \
        LINE="$name = $expression" rewrite "$gradle" awk '
            $0 ~ ENVIRON["PATTERN"] {
                indent = $0
                sub(/[^ ].*$/, "", indent)
                print indent ENVIRON["LINE"]
                next
            }
            { print }'
        echo "android: $name at least $floor in $gradle"
    done
}

# Core library desugaring: a flag in compileOptions and the library in
# dependencies (appended; Gradle merges several dependencies blocks).
android_desugaring() {
    local gradle flag library
    for gradle in android/app/build.gradle.kts android/app/build.gradle; do
        [ -f "$gradle" ] || continue
        grep -q 'desugar_jdk_libs' "$gradle" && continue
        if ! grep -q 'compileOptions *{' "$gradle"; then
            echo "error: no compileOptions block in $gradle to enable desugaring in" >&2
            return 1
        fi
        case $gradle in
            *.kts) flag='isCoreLibraryDesugaringEnabled = true'
                   library="    coreLibraryDesugaring(\"$DESUGAR_LIBS\")" ;;
            *)     flag='coreLibraryDesugaringEnabled true'
                   library="    coreLibraryDesugaring '$DESUGAR_LIBS'" ;;
        esac
        FLAG=$flag rewrite "$gradle" awk '
            { print }
            !done && /compileOptions *\{/ {
                indent = $0
                sub(/[^ \t].*$/, "", indent)
                print indent "    " ENVIRON["FLAG"]
                done = 1
            }'
        printf '\ndependencies {\n%s\n}\n' "$library" >>"$gradle"
        echo "android: core library desugaring in $gradle"
    done
}

patch_android() {
    if [ ! -f "$ANDROID_MANIFEST" ]; then
        echo "skip android: no $ANDROID_MANIFEST"
        return
    fi
    android_permission INTERNET
    android_permission CAMERA
    android_permission POST_NOTIFICATIONS
    android_permission WRITE_EXTERNAL_STORAGE ' android:maxSdkVersion="29"'
    android_application_attribute android:usesCleartextTraffic true
    android_application_attribute android:requestLegacyExternalStorage true
    android_sdk_floor minSdk "$MIN_SDK"
    android_sdk_floor compileSdk "$COMPILE_SDK"
    android_desugaring
}

# Adds <key>$1</key> followed by the value lines $2 before the plist's last
# </dict>, unless the key is there already.
plist_add() {
    local key=$1 value=$2
    if grep -q "<key>$key</key>" "$IOS_PLIST"; then
        return
    fi
    local last
    last=$(grep -n '</dict>' "$IOS_PLIST" | tail -n 1 | cut -d: -f1 || true)
    if [ -z "$last" ]; then
        echo "error: $IOS_PLIST has no </dict>" >&2
        return 1
    fi
    AT=$last KEY=$key VALUE=$value rewrite "$IOS_PLIST" awk '
        NR == ENVIRON["AT"] + 0 { printf "\t<key>%s</key>\n%s\n", ENVIRON["KEY"], ENVIRON["VALUE"] }
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
    plist_add NSPhotoLibraryAddUsageDescription \
        $'\t<string>Save photos you received in the chat to your library.</string>'
    plist_add NSPhotoLibraryUsageDescription \
        $'\t<string>Save photos you received in the chat to your library.</string>'
    plist_add NSAppTransportSecurity \
        $'\t<dict>\n\t\t<key>NSAllowsLocalNetworking</key>\n\t\t<true/>\n\t</dict>'
    plist_add UIFileSharingEnabled $'\t<true/>'
    plist_add LSSupportsOpeningDocumentsInPlace $'\t<true/>'
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
