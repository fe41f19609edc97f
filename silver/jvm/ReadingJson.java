// Silver's reading parser as one JVM function: a JSON value (the Kafka record's text) ->
// the struct silver.schema.PARSED_READING_SCHEMA declares (same fields, same order).
//
// One pass of Jackson's streaming parser does what took several column expressions per field
// before (from_json into VARIANTs, schema_of_variant per field, and two more parses to find
// content after the object): it tells whether the text is exactly one JSON object, and for
// each reading field whether it is absent or null (KIND_ABSENT), a string (KIND_TEXT, with its
// text), a number (KIND_NUMBER, as a double: NaN, Infinity and numbers beyond a double read as
// non-finite) or anything else (KIND_OTHER). The reason codes are derived from that by
// silver.transform.parse, as column expressions. The factory's settings are Spark's JSON
// defaults plus the options silver passed to from_json, so the same texts are accepted.
//
// Built by jobs/parser_jar.py (javac against PySpark's jars); registered by silver.transform.
package lakehouse.silver;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import com.fasterxml.jackson.core.StreamReadConstraints;
import com.fasterxml.jackson.core.json.JsonReadFeature;
import java.io.IOException;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.api.java.UDF1;

public final class ReadingJson implements UDF1<String, Row> {
  private static final long serialVersionUID = 1L;

  // silver.schema.READING_FIELDS order; the struct holds the texts, then the numbers, then
  // one kind per field in this order.
  static final String[] TEXT_FIELDS = {"sensor_id", "timestamp", "location"};
  static final String[] NUMBER_FIELDS = {"temperature", "humidity", "pressure"};
  static final int KIND_ABSENT = 0;
  static final int KIND_TEXT = 1;
  static final int KIND_NUMBER = 2;
  static final int KIND_OTHER = 3;
  private static final int FIELDS = TEXT_FIELDS.length + NUMBER_FIELDS.length;

  // Spark's JSONOptions defaults (no comments, quoted names, no leading zeros, no escaping
  // of any character, no raw control characters; NaN/Infinity read as numbers), single
  // quotes refused, and Jackson's limits as Spark keeps them (1000 levels, 1000-digit
  // numbers); strings of any length (a 1 MB reading is one value, not a malformed one).
  private static final JsonFactory FACTORY =
      JsonFactory.builder()
          .configure(JsonReadFeature.ALLOW_JAVA_COMMENTS, false)
          .configure(JsonReadFeature.ALLOW_UNQUOTED_FIELD_NAMES, false)
          .configure(JsonReadFeature.ALLOW_SINGLE_QUOTES, false)
          .configure(JsonReadFeature.ALLOW_LEADING_ZEROS_FOR_NUMBERS, false)
          .configure(JsonReadFeature.ALLOW_NON_NUMERIC_NUMBERS, true)
          .configure(JsonReadFeature.ALLOW_BACKSLASH_ESCAPING_ANY_CHARACTER, false)
          .configure(JsonReadFeature.ALLOW_UNESCAPED_CONTROL_CHARS, false)
          .streamReadConstraints(
              StreamReadConstraints.builder()
                  .maxNestingDepth(1000)
                  .maxNumberLength(1000)
                  .maxStringLength(Integer.MAX_VALUE)
                  .build())
          .build();

  private static final Row MALFORMED = malformedRow();

  @Override
  public Row call(String value) {
    if (value == null || !startsWithObject(value)) {
      return MALFORMED;
    }
    String[] texts = new String[TEXT_FIELDS.length];
    Double[] numbers = new Double[NUMBER_FIELDS.length];
    int[] kinds = new int[FIELDS];
    try (JsonParser p = FACTORY.createParser(value)) {
      p.nextToken(); // the object's start
      JsonToken token;
      while ((token = p.nextToken()) == JsonToken.FIELD_NAME) {
        int field = fieldIndex(p.currentName());
        JsonToken v = p.nextToken();
        if (field < 0) {
          p.skipChildren(); // not a reading field: read (depth, grammar), not kept
          continue;
        }
        // A repeated field: the last value counts, as in from_json and Python's json.
        int kind;
        String text = null;
        Double number = null;
        switch (v) {
          case VALUE_NULL:
            kind = KIND_ABSENT;
            break;
          case VALUE_STRING:
            text = p.getText();
            if (hasLoneSurrogate(text)) {
              return MALFORMED; // JSON grammar, but no Unicode text
            }
            kind = KIND_TEXT;
            break;
          case VALUE_NUMBER_INT:
          case VALUE_NUMBER_FLOAT:
            kind = KIND_NUMBER;
            number = p.getDoubleValue();
            break;
          case START_OBJECT:
          case START_ARRAY:
            if (subtreeHasLoneSurrogate(p)) {
              return MALFORMED;
            }
            kind = KIND_OTHER;
            break;
          default: // true, false
            kind = KIND_OTHER;
        }
        kinds[field] = kind;
        if (field < TEXT_FIELDS.length) {
          texts[field] = kind == KIND_TEXT ? text : null;
        } else {
          numbers[field - TEXT_FIELDS.length] = number;
        }
      }
      // The object closed, and nothing but whitespace after it: one JSON value only.
      if (token != JsonToken.END_OBJECT || p.nextToken() != null) {
        return MALFORMED;
      }
    } catch (IOException | RuntimeException e) { // grammar, depth or number-length limits
      return MALFORMED;
    }
    Object[] row = new Object[1 + FIELDS + FIELDS];
    row[0] = Boolean.FALSE;
    System.arraycopy(texts, 0, row, 1, texts.length);
    System.arraycopy(numbers, 0, row, 1 + texts.length, numbers.length);
    for (int i = 0; i < FIELDS; i++) {
      row[1 + FIELDS + i] = kinds[i];
    }
    return RowFactory.create(row);
  }

  /** The first character after JSON whitespace opens an object. */
  private static boolean startsWithObject(String value) {
    for (int i = 0; i < value.length(); i++) {
      char c = value.charAt(i);
      if (c == '{') {
        return true;
      }
      if (c != ' ' && c != '\t' && c != '\r' && c != '\n') {
        return false;
      }
    }
    return false;
  }

  private static int fieldIndex(String name) {
    for (int i = 0; i < TEXT_FIELDS.length; i++) {
      if (TEXT_FIELDS[i].equals(name)) {
        return i;
      }
    }
    for (int i = 0; i < NUMBER_FIELDS.length; i++) {
      if (NUMBER_FIELDS[i].equals(name)) {
        return TEXT_FIELDS.length + i;
      }
    }
    return -1;
  }

  /** Reads the object or array just opened to its end; any key or string with a lone
   *  surrogate? */
  private static boolean subtreeHasLoneSurrogate(JsonParser p) throws IOException {
    int depth = 1;
    while (depth > 0) {
      JsonToken t = p.nextToken();
      if (t == null) {
        throw new IOException("unexpected end of input");
      }
      switch (t) {
        case START_OBJECT:
        case START_ARRAY:
          depth++;
          break;
        case END_OBJECT:
        case END_ARRAY:
          depth--;
          break;
        case FIELD_NAME:
        case VALUE_STRING:
          if (hasLoneSurrogate(p.getText())) {
            return true;
          }
          break;
        default:
      }
    }
    return false;
  }

  private static boolean hasLoneSurrogate(String s) {
    for (int i = 0; i < s.length(); i++) {
      char c = s.charAt(i);
      if (Character.isHighSurrogate(c)) {
        if (i + 1 < s.length() && Character.isLowSurrogate(s.charAt(i + 1))) {
          i++;
        } else {
          return true;
        }
      } else if (Character.isLowSurrogate(c)) {
        return true;
      }
    }
    return false;
  }

  private static Row malformedRow() {
    Object[] row = new Object[1 + FIELDS + FIELDS];
    row[0] = Boolean.TRUE;
    for (int i = 0; i < FIELDS; i++) {
      row[1 + FIELDS + i] = KIND_ABSENT;
    }
    return RowFactory.create(row);
  }
}
