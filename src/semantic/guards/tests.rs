//! The guards' cases: paraphrases that pass, and each class of near-miss they refuse.
use super::*;

fn refused(a: &str, b: &str) -> Option<&'static str> {
    refuses(a, b, &Guard::ALL).map(Guard::name)
}

#[test]
fn paraphrases_pass() {
    for (a, b) in [
        (
            "How do I reset my password?",
            "What is the way to reset my password?",
        ),
        (
            "List the open tickets of Acme",
            "Show me Acme's open tickets",
        ),
        ("What was revenue in Q3 2024?", "Revenue for Q3 2024?"),
        ("Why is the build failing?", "why does the build fail"),
        ("明天北京天气怎么样", "北京明天的天气如何"),
    ] {
        assert_eq!(refused(a, b), None, "{a:?} ~ {b:?}");
    }
}

#[test]
fn negation_differences_are_refused() {
    for (a, b) in [
        (
            "Should I cancel the order?",
            "Should I not cancel the order?",
        ),
        (
            "Does the plan include dental?",
            "Doesn't the plan include dental?",
        ),
        ("Refunds are allowed", "Refunds are never allowed"),
        ("list users with a manager", "list users without a manager"),
        ("这个方案可行", "这个方案不可行"),
        ("他来了", "他没来"),
        ("这个方案非常好", "这个方案非常不好"),
    ] {
        assert_eq!(refused(a, b), Some("negation"), "{a:?} ~ {b:?}");
    }
}

#[test]
fn number_date_and_amount_differences_are_refused() {
    for (a, b) in [
        (
            "Show the invoices of March 2024",
            "Show the invoices of April 2024",
        ),
        ("Transfer $500 to savings", "Transfer $5,000 to savings"),
        (
            "Meeting at 10:30 on 2024-03-01",
            "Meeting at 10:30 on 2024-03-02",
        ),
        ("What is the weather tomorrow", "What is the weather today"),
        ("Top five customers", "Top ten customers"),
        ("Convert 3 km to miles", "Convert 30 km to miles"),
        ("三月的发票", "四月的发票"),
    ] {
        assert_eq!(refused(a, b), Some("numbers"), "{a:?} ~ {b:?}");
    }
    // Only the grouping differs.
    assert_eq!(refused("Transfer $5,000 now", "Transfer $5000 now"), None);
}

#[test]
fn entity_and_identifier_differences_are_refused() {
    for (a, b) in [
        (
            "What is the weather in Paris?",
            "What is the weather in London?",
        ),
        (
            "Send the report from Alice to Bob",
            "Send the report from Bob to Alice",
        ),
        (
            "Explain the function parse_config",
            "Explain the function load_config",
        ),
        ("Why does HashMap panic?", "Why does BTreeMap panic?"),
        (
            "Delete the repo \"billing\"",
            "Delete the repo \"payments\"",
        ),
    ] {
        assert_eq!(refused(a, b), Some("entities"), "{a:?} ~ {b:?}");
    }
    // A capital at a sentence's start is not a name.
    assert_eq!(
        refused(
            "Show open tickets. Sort by age",
            "show open tickets. sort by age"
        ),
        None
    );
}

#[test]
fn opposite_words_are_refused_as_negation() {
    for (a, b) in [
        ("Buy 10 shares of AAPL", "Sell 10 shares of AAPL"),
        ("Approve the expense report", "Reject the expense report"),
        (
            "List employees hired after 2020",
            "List employees hired before 2020",
        ),
        (
            "Customers who spent more than $1,000",
            "Customers who spent less than $1,000",
        ),
        ("How do I enable 2FA?", "How do I disable 2FA?"),
        ("买入10股", "卖出10股"),
        ("CPU使用率超过90%的服务器", "CPU使用率低于90%的服务器"),
    ] {
        assert_eq!(refused(a, b), Some("negation"), "{a:?} ~ {b:?}");
    }
    // Synonyms are on the same side, and saying it twice is no different.
    for (a, b) in [
        ("Lower the price by 10%", "Reduce the price by 10%"),
        (
            "Increase the memory limit to 4 GB",
            "Bump the memory limit up to 4 GB",
        ),
        ("买入10股", "购买10股"),
    ] {
        assert_eq!(refused(a, b), None, "{a:?} ~ {b:?}");
    }
}

#[test]
fn units_and_numbers_inside_words() {
    for (a, b) in [
        (
            "Users seen in the last 24 hours",
            "Users seen in the last 24 days",
        ),
        (
            "Distance to Munich in kilometers",
            "Distance to Munich in miles",
        ),
        ("Weigh 2 kg of flour", "Weigh 2 lbs of flour"),
        ("显示2024年3月的发票", "显示2024年4月的发票"),
        ("称2公斤面粉", "称2斤面粉"),
        ("转500元", "转500美元"),
        ("What is the p99 latency?", "What is the p95 latency?"),
    ] {
        assert_eq!(refused(a, b), Some("numbers"), "{a:?} ~ {b:?}");
    }
    for (a, b) in [
        ("Move $500 to savings", "Move 500 dollars to savings"),
        ("What is 15% of 240?", "What is 15 percent of 240?"),
        ("显示2024年3月的发票", "列出2024年3月的发票"),
        ("I am here for 2 hours", "I am here for 2 hrs"),
    ] {
        assert_eq!(refused(a, b), None, "{a:?} ~ {b:?}");
    }
    // The degree sign makes a lone "C" a unit.
    assert_eq!(
        refuses("Set it to 21 °C", "Set it to 21°C", &[Guard::Numbers]),
        None
    );
}

#[test]
fn direction_and_chinese_questions() {
    for (a, b) in [
        (
            "Transfer 500 dollars from checking to savings",
            "Transfer 500 dollars from savings to checking",
        ),
        ("Find flights to Rome", "Find flights from Rome"),
    ] {
        assert_eq!(refused(a, b), Some("entities"), "{a:?} ~ {b:?}");
    }
    for (a, b) in [
        (
            "Transfer 500 dollars from checking to savings",
            "Move 500 dollars from my checking account to savings",
        ),
        (
            "How do I reset my password?",
            "What is the way to reset my password?",
        ),
    ] {
        assert_eq!(refused(a, b), None, "{a:?} ~ {b:?}");
    }
    // 是否 and A-not-A questions ask; they do not deny. (Whole Chinese sentences are one
    // "word" to the entity guard, so only the negation guard is asked here.)
    for (a, b) in [
        ("API服务器在运行吗？", "API服务器是否正在运行？"),
        ("李雷把报告发给韩梅梅了吗？", "李雷有没有把报告发给韩梅梅？"),
    ] {
        assert_eq!(refuses(a, b, &[Guard::Negation]), None, "{a:?} ~ {b:?}");
    }
}

#[test]
fn only_the_configured_guards_apply() {
    let (a, b) = ("invoices of march", "invoices of april");
    assert_eq!(refuses(a, b, &[Guard::Negation, Guard::Entities]), None);
    assert_eq!(refuses(a, b, &[Guard::Numbers]), Some(Guard::Numbers));
    assert_eq!(Guard::parse("numbers"), Some(Guard::Numbers));
    assert_eq!(Guard::parse("vibes"), None);
}

#[test]
fn names_in_another_order_or_case_are_the_same_names() {
    for (a, b) in [
        (
            "Schedule a meeting with Alice on Monday at 10am",
            "Set up a Monday 10am meeting with Alice",
        ),
        (
            "What is the distance from Berlin to Munich in kilometers?",
            "How far is Munich from Berlin in km?",
        ),
        (
            "Gu Kailai murder trial ends in China",
            "Gu Kailai's Murder Trial Ends in China",
        ),
        (
            "Did Alice send the report to Bob?",
            "Did the report go from Alice to Bob?",
        ),
        (
            "Book a flight from New York to London on May 3",
            "Reserve a flight New York to London for May 3",
        ),
        (
            "Show the invoices for March 2024",
            "List the invoices from March 2024",
        ),
        // Units are the numbers guard's: "Celsius" is no name.
        (
            "Set the thermostat to 21 degrees Celsius",
            "Change the thermostat to 21 °C",
        ),
    ] {
        assert_eq!(refused(a, b), None, "{a:?} ~ {b:?}");
    }
}

#[test]
fn who_to_whom_is_still_refused() {
    for (a, b) in [
        (
            "Did Alice send the report to Bob?",
            "Did Bob send the report to Alice?",
        ),
        ("Alice pays Bob", "Bob pays Alice"),
        ("Convert 100 USD to EUR", "Convert 100 EUR to USD"),
        (
            "Book a flight from New York to London on May 3",
            "Reserve a flight London to New York for May 3",
        ),
        (
            "Can I expense a taxi ride to the airport?",
            "Can I expense a taxi ride from the airport?",
        ),
        (
            "Translate this paragraph to French",
            "Translate this paragraph from French",
        ),
        // A name only one text holds.
        ("Show the invoices", "Show the Acme invoices"),
    ] {
        assert_eq!(refused(a, b), Some("entities"), "{a:?} ~ {b:?}");
    }
}

#[test]
fn number_words_possessives_and_question_words() {
    for (a, b) in [
        (
            "Weigh 2 kilograms of flour",
            "Weigh out two kilograms of flour",
        ),
        ("Add twenty-five users", "Add 25 users"),
        (
            "Calculate the average order value for January",
            "Compute January's average order value",
        ),
        (
            "Lower the price of item 1042 by 10%",
            "Reduce item 1042's price by 10 percent",
        ),
        (
            "What is the weather in Paris tomorrow?",
            "Tomorrow's weather forecast for Paris?",
        ),
        (
            "What time does the Berlin office open?",
            "At what hour does the Berlin office open?",
        ),
        (
            "Is the office closed on Christmas?",
            "Is the office shut on Christmas Day?",
        ),
    ] {
        assert_eq!(refused(a, b), None, "{a:?} ~ {b:?}");
    }
    for (a, b) in [
        ("Top five customers", "Top 10 customers"),
        ("Add twenty-five users", "Add 35 users"),
        ("Users seen in the last day", "Users seen in the last week"),
        ("Reports of the last 2 hours", "Reports of the last 2 days"),
    ] {
        assert_eq!(refused(a, b), Some("numbers"), "{a:?} ~ {b:?}");
    }
}

#[test]
fn turning_on_is_enabling() {
    assert_eq!(
        refused("How do I enable 2FA?", "How can I turn on 2FA?"),
        None
    );
    assert_eq!(refused("Switch the alerts off", "Disable the alerts"), None);
    assert_eq!(
        refused("How do I enable 2FA?", "How do I turn 2FA off?"),
        Some("negation")
    );
}

#[test]
fn a_direction_one_text_does_not_say_is_refused() {
    for (a, b) in [
        (
            "Has the Globex payment been processed?",
            "Did the payment from Globex go through?",
        ),
        (
            "Has Alice sent Bob the report?",
            "Did Bob send the report to Alice?",
        ),
    ] {
        assert_eq!(refused(a, b), Some("entities"), "{a:?} ~ {b:?}");
    }
}
