"""client_flutter/tool/setup_platforms.sh patches the platform folders `flutter create` makes.

It must work with every awk it meets: BWK awk (what macOS ships, the only place iOS builds;
Debian's `original-awk`), gawk and mawk (Debian's default). Each test runs the script with a
symlink named `awk` to one of them first on PATH, against files shaped like Flutter's
templates, and checks the result with real XML / plist parsers.
"""
import os
import plistlib
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "client_flutter" / "tool" / "setup_platforms.sh"
AWKS = ["original-awk", "gawk", "mawk"]
ANDROID_NS = "{http://schemas.android.com/apk/res/android}"

# As `flutter create` writes them (Flutter 3.41: Kotlin DSL; older: Groovy).
ANDROID_MANIFEST = """<manifest xmlns:android="http://schemas.android.com/apk/res/android">
    <application
        android:label="lan_chat"
        android:name="${applicationName}"
        android:icon="@mipmap/ic_launcher">
        <activity
            android:name=".MainActivity"
            android:exported="true"
            android:launchMode="singleTop">
        </activity>
    </application>
    <queries>
        <intent>
            <action android:name="android.intent.action.PROCESS_TEXT"/>
            <data android:mimeType="text/plain"/>
        </intent>
    </queries>
</manifest>
"""

GRADLE_KTS = """android {
    namespace = "org.lanchat.lan_chat"
    compileSdk = flutter.compileSdkVersion

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_11
        targetCompatibility = JavaVersion.VERSION_11
    }

    defaultConfig {
        applicationId = "org.lanchat.lan_chat"
        minSdk = flutter.minSdkVersion
        targetSdk = flutter.targetSdkVersion
    }
}

flutter {
    source = "../.."
}
"""

GRADLE_GROOVY = """android {
    compileSdkVersion flutter.compileSdkVersion
    compileOptions {
        sourceCompatibility JavaVersion.VERSION_1_8
    }
    defaultConfig {
        applicationId "org.lanchat.lan_chat"
        minSdkVersion flutter.minSdkVersion
        targetSdkVersion flutter.targetSdkVersion
    }
}
"""

INFO_PLIST = """<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
\t<key>CFBundleName</key>
\t<string>lan_chat</string>
\t<key>UIApplicationSceneManifest</key>
\t<dict>
\t\t<key>UIApplicationSupportsMultipleScenes</key>
\t\t<false/>
\t</dict>
\t<key>UISupportedInterfaceOrientations</key>
\t<array>
\t\t<string>UIInterfaceOrientationPortrait</string>
\t</array>
</dict>
</plist>
"""


def need(tool):
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("%s is required in CI (.ci/run installs it)" % tool)
        pytest.skip("%s not installed (apt-get install original-awk gawk)" % tool)
    return path


@pytest.fixture(params=AWKS)
def awk_path(request, tmp_path):
    """A PATH whose `awk` is the awk named by the parameter."""
    need("bash")
    real = need(request.param)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "awk").symlink_to(real)
    return "%s%s%s" % (bin_dir, os.pathsep, os.environ.get("PATH", ""))


def make_project(root, gradle_name="build.gradle.kts", gradle=GRADLE_KTS):
    (root / "tool").mkdir(parents=True)
    shutil.copy(SCRIPT, root / "tool")
    app = root / "android" / "app"
    (app / "src" / "main").mkdir(parents=True)
    (app / "src" / "main" / "AndroidManifest.xml").write_text(ANDROID_MANIFEST)
    (app / gradle_name).write_text(gradle)
    (root / "ios" / "Runner").mkdir(parents=True)
    (root / "ios" / "Runner" / "Info.plist").write_text(INFO_PLIST)
    return root


def run_setup(project, path, check=True):
    env = dict(os.environ, PATH=path)
    return subprocess.run(["bash", str(project / "tool" / "setup_platforms.sh"), "--patch-only"],
                          capture_output=True, text=True, timeout=60, env=env, check=check)


def manifest_of(project):
    return ET.parse(project / "android" / "app" / "src" / "main" / "AndroidManifest.xml").getroot()


def plist_of(project):
    return plistlib.loads((project / "ios" / "Runner" / "Info.plist").read_bytes())


def test_the_awk_on_path_is_the_one_under_test(awk_path, request):
    """Control: the symlink really decides which awk runs. BWK awk refuses a -v value with a
    newline, which is the bug the script avoids; gawk and mawk accept it."""
    env = dict(os.environ, PATH=awk_path)
    result = subprocess.run(["bash", "-c", "awk -v v=\"$(printf 'a\\nb')\" 'BEGIN { print v }'"],
                            capture_output=True, text=True, timeout=30, env=env)
    if request.node.callspec.params["awk_path"] == "original-awk":
        assert result.returncode != 0 and "newline" in result.stderr
    else:
        assert result.returncode == 0 and result.stdout == "a\nb\n"


def test_android_manifest_gets_permissions_and_attributes(awk_path, tmp_path):
    project = make_project(tmp_path / "p")
    run_setup(project, awk_path)
    root = manifest_of(project)
    permissions = {p.get(ANDROID_NS + "name"): p for p in root.findall("uses-permission")}
    assert sorted(permissions) == ["android.permission.CAMERA", "android.permission.INTERNET",
                                   "android.permission.POST_NOTIFICATIONS",
                                   "android.permission.WRITE_EXTERNAL_STORAGE"]
    assert permissions["android.permission.WRITE_EXTERNAL_STORAGE"].get(
        ANDROID_NS + "maxSdkVersion") == "29"
    application = root.find("application")
    assert application.get(ANDROID_NS + "usesCleartextTraffic") == "true"
    assert application.get(ANDROID_NS + "requestLegacyExternalStorage") == "true"
    assert application.get(ANDROID_NS + "label") == "lan_chat", "existing attributes kept"
    assert root.find("queries") is not None, "the rest of the manifest kept"


def test_an_application_tag_on_one_line_stays_valid_xml(awk_path, tmp_path):
    project = make_project(tmp_path / "p")
    manifest = project / "android" / "app" / "src" / "main" / "AndroidManifest.xml"
    manifest.write_text('<manifest xmlns:android="http://schemas.android.com/apk/res/android">\n'
                        '    <application android:label="x"><activity android:name=".A"/>'
                        '</application>\n</manifest>\n')
    run_setup(project, awk_path)
    application = manifest_of(project).find("application")
    assert application.get(ANDROID_NS + "usesCleartextTraffic") == "true"
    assert application.get(ANDROID_NS + "label") == "x"
    assert application.find("activity") is not None


GRADLE_CASES = pytest.mark.parametrize("gradle_name, gradle, expected, flag, library", [
    ("build.gradle.kts", GRADLE_KTS, "        minSdk = maxOf(flutter.minSdkVersion, 24)\n",
     "        isCoreLibraryDesugaringEnabled = true\n",
     '    coreLibraryDesugaring("com.android.tools:desugar_jdk_libs:2.1.4")\n'),
    ("build.gradle", GRADLE_GROOVY, "        minSdk = Math.max(flutter.minSdkVersion, 24)\n",
     "        coreLibraryDesugaringEnabled true\n",
     "    coreLibraryDesugaring 'com.android.tools:desugar_jdk_libs:2.1.4'\n"),
], ids=["kotlin-dsl", "groovy"])


@GRADLE_CASES
def test_android_min_sdk_is_at_least_24_and_compile_sdk_36(awk_path, tmp_path, gradle_name, gradle,
                                                          expected, flag, library):
    project = make_project(tmp_path / "p", gradle_name, gradle)
    run_setup(project, awk_path)
    text = (project / "android" / "app" / gradle_name).read_text()
    assert expected in text
    compile_sdk = expected.strip().replace("minSdk", "compileSdk").replace("24", "36")
    assert [line.strip() for line in text.splitlines() if "compileSdk" in line] == [compile_sdk]
    assert "    " + compile_sdk + "\n" in text, "indentation kept"
    assert [line for line in text.splitlines() if "minSdk" in line] == [expected.rstrip("\n")]
    assert "targetSdk" in text and "applicationId" in text, "other lines kept"


@GRADLE_CASES
def test_android_core_library_desugaring_is_enabled(awk_path, tmp_path, gradle_name, gradle,
                                                    expected, flag, library):
    """flutter_local_notifications needs it; without it the APK build fails."""
    project = make_project(tmp_path / "p", gradle_name, gradle)
    run_setup(project, awk_path)
    text = (project / "android" / "app" / gradle_name).read_text()
    options = text.index("compileOptions {")
    assert text.index(flag) > options
    assert text.index(flag) < text.index("}", options), "the flag is inside compileOptions"
    assert text.endswith("\ndependencies {\n%s}\n" % library)
    assert text.lower().count("desugaring") == 2 and text.count("desugar_jdk_libs") == 1


def test_gradle_without_compile_options_is_refused(awk_path, tmp_path):
    project = make_project(tmp_path / "p", "build.gradle.kts", "android {\n    minSdk = 21\n}\n")
    result = run_setup(project, awk_path, check=False)
    assert result.returncode != 0
    assert "no compileOptions block" in result.stderr
    assert (project / "android" / "app" / "build.gradle.kts").read_text() == \
        "android {\n    minSdk = 21\n}\n"


def test_ios_plist_gets_every_key(awk_path, tmp_path):
    project = make_project(tmp_path / "p")
    result = run_setup(project, awk_path)
    info = plist_of(project)
    assert info["NSCameraUsageDescription"].startswith("Scan the pairing QR code")
    assert info["NSLocalNetworkUsageDescription"]
    assert info["NSPhotoLibraryAddUsageDescription"]
    assert info["NSPhotoLibraryUsageDescription"]
    assert info["NSAppTransportSecurity"] == {"NSAllowsLocalNetworking": True}
    assert info["UIFileSharingEnabled"] is True
    assert info["LSSupportsOpeningDocumentsInPlace"] is True
    assert info["CFBundleName"] == "lan_chat", "existing keys kept"
    assert info["UIApplicationSceneManifest"] == {"UIApplicationSupportsMultipleScenes": False}
    assert "ios: added NSAppTransportSecurity" in result.stdout
    assert not (project / "ios" / "Runner" / "Info.plist.tmp").exists()


def test_running_twice_changes_nothing(awk_path, tmp_path):
    project = make_project(tmp_path / "p")
    files = [project / "android" / "app" / "src" / "main" / "AndroidManifest.xml",
             project / "android" / "app" / "build.gradle.kts",
             project / "ios" / "Runner" / "Info.plist"]
    run_setup(project, awk_path)
    once = [f.read_text() for f in files]
    second = run_setup(project, awk_path)
    assert [f.read_text() for f in files] == once
    assert "added" not in second.stdout and "set " not in second.stdout


def test_a_plist_it_cannot_patch_fails_cleanly(awk_path, tmp_path):
    """A plist without </dict> is refused with a message; the file is untouched and no
    temporary file stays (the old script left an empty Info.plist.tmp)."""
    project = make_project(tmp_path / "p")
    plist = project / "ios" / "Runner" / "Info.plist"
    plist.write_text("<plist><array/></plist>\n")
    result = run_setup(project, awk_path, check=False)
    assert result.returncode != 0
    assert "no </dict>" in result.stderr
    assert plist.read_text() == "<plist><array/></plist>\n"
    assert sorted(p.name for p in plist.parent.iterdir()) == ["Info.plist"]


def test_without_platform_folders_nothing_changes(tmp_path):
    need("bash")
    (tmp_path / "tool").mkdir()
    shutil.copy(SCRIPT, tmp_path / "tool")
    result = run_setup(tmp_path, os.environ.get("PATH", ""))
    assert "skip android" in result.stdout and "skip ios" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tool"]
