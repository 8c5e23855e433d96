%% otp: file:consult/1 and application:load/1 (OTP 25): a version or description written
%% as a list of codes is the same string, and "" is [] (no modules).
%% expect: ok
{application, a, [{vsn, [$1, $.,  $0]}, {description, [104, 105]}, {modules, ""}]}.
